from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..conftest import redis_url_or_skip
from .harness import ServerProcess, cluster


@pytest.fixture(scope="session")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One shared node for the tests that do not stop or restart it."""
    proc = ServerProcess(database_url, str(tmp_path_factory.mktemp("node"))).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture(scope="module")
def nodes(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ServerProcess]]:
    """Three nodes on one PostgreSQL and one Redis (a cluster per test module)."""
    env = {"REDIS_URL": redis_url_or_skip()}
    with cluster(database_url, tmp_path_factory, 3, name="n", env=env) as procs:
        yield procs
