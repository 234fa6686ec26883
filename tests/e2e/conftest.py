from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..conftest import redis_url_or_skip
from .harness import ServerProcess


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
    redis_url = redis_url_or_skip()
    procs = [
        ServerProcess(
            database_url,
            str(tmp_path_factory.mktemp(f"node{i}")),
            env={"REDIS_URL": redis_url, "LIVECART_NODE_ID": f"n{i}"},
        ).start()
        for i in range(3)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
