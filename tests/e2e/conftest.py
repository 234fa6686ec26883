from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import ServerProcess


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared node for the tests that do not stop or restart it."""
    proc = ServerProcess(database_url, str(tmp_path_factory.mktemp("node"))).start()
    try:
        yield proc
    finally:
        proc.kill()
