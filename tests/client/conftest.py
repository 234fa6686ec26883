from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..e2e.harness import ServerProcess

# Chat limits out of the way: the tests count messages, not the moderation of a flood.
FAST_CHAT = {
    "LIVECART_CHAT_RATE_PER_S": "10000",
    "LIVECART_CHAT_BURST": "10000",
    "LIVECART_CHAT_DISPLAY_BUDGET": "0",
}


@pytest.fixture(scope="module")
def node(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One node for the module's tests that do not restart it."""
    proc = ServerProcess(database_url, str(tmp_path_factory.mktemp("sdk")), env=FAST_CHAT).start()
    try:
        yield proc
    finally:
        proc.kill()
