"""Trending on a real Redis Cluster: the store split into shards (one slot each, spread over
the masters), increments sent to each account's shard and numerators merged on read, equal
to the core's single-store reference (`SharedStore`)."""

from __future__ import annotations

import secrets

from livecart.ranking import SharedTrending
from livecart.ranking.core import ProductInfo, RankingConfig, SessionInfo, TrendingIndex
from livecart.ranking.core.trending import Delta
from livecart.ranking.sync import CLUSTER_SHARDS

from ..e2e.test_cluster_ranking import _stream, replay_against_reference, three_indexes
from ..redis_cluster import RedisCluster6


async def test_sharded_store_merges_to_the_reference(redis_cluster: RedisCluster6) -> None:
    indexes = three_indexes()
    prefix = f"lc-test-{secrets.token_hex(4)}:{{rank}}"
    shared = [SharedTrending(redis_cluster.url, index, prefix=prefix) for index in indexes]
    assert len(shared[0].shard_prefixes) == CLUSTER_SHARDS
    # The shards spread over more than one master.
    owners = {redis_cluster.master_of(f"{p}:landmark") for p in shared[0].shard_prefixes}
    assert len(owners) > 1
    try:
        _, checked = await replay_against_reference(indexes, shared, 400, seed=5)
        assert checked > 100
    finally:
        for s in shared:
            await s.close()


async def test_a_failed_shard_gives_back_only_its_own_increments(
    redis_cluster: RedisCluster6,
) -> None:
    """When one shard refuses its script (here: its landmark key has the wrong type) and the
    others apply theirs, the node gets back exactly the failed shard's deltas to resend, so
    the shards that succeeded are not counted twice."""
    import pytest

    from livecart.ranking.sync import PartialSync
    from livecart.redisconn import connect

    config = RankingConfig(half_life_s=30.0, landmark_period_s=200.0, cap_memory_s=150.0)
    index = TrendingIndex(config, landmark=0.0)
    for i in range(4):
        index.put_product(ProductInfo(f"p{i}", f"cr{i % 2}", "c"))
    index.start_session(SessionInfo("s0", "cr0", "c"), ["p0", "p2"])
    prefix = f"lc-test-{secrets.token_hex(4)}:{{rank}}"
    shared = SharedTrending(redis_cluster.url, index, prefix=prefix)
    broken = 3
    raw = connect(redis_cluster.url)
    try:
        await raw.hset(f"{shared.shard_prefixes[broken]}:landmark", "x", "1")
        deltas: list[Delta] = []
        for n, signal in enumerate(_stream(300, 5, config.landmark_period)):
            index.ingest(signal, deltas)
            if n > 50:
                break
        by_shard = {k: [d for d in deltas if shared._shard(d) == k] for k in range(8)}
        assert by_shard[broken] and any(by_shard[k] for k in range(8) if k != broken)
        live = (["p0", "p1", "p2", "p3"], ["s0"], ["cr0", "cr1"])
        with pytest.raises(PartialSync) as caught:
            await shared.sync(deltas, live)
        assert caught.value.unsent == by_shard[broken]
        # The healthy shards did apply theirs: their landmark keys exist now.
        for k, p in enumerate(shared.shard_prefixes):
            if k != broken and by_shard[k]:
                assert await raw.get(f"{p}:landmark") is not None
    finally:
        await raw.aclose()
        await shared.close()
