"""Prometheus metrics of one node, in a registry the node owns (no process globals).

Label values are always from small fixed sets (frame types, roles, close codes, outcomes):
never a user, session or offer id."""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BYTES_BUCKETS = (0, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


# The node updates its metrics from one thread (its event loop) on every frame, so they are
# plain numbers (an add, a bisect) rather than prometheus_client's lock-guarded values, and
# are turned into families only when scraped.


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class _Family:
    """One metric with optional labels; `labels(...)` children are kept by their values."""

    def __init__(
        self,
        kind: str,
        name: str,
        doc: str,
        labelnames: tuple[str, ...] = (),
        buckets: tuple[float, ...] = (),
    ) -> None:
        self.kind = kind
        self.name = name.removesuffix("_total") if kind == "counter" else name
        self.doc = doc
        self.labelnames = labelnames
        self._buckets = buckets
        self._children: dict[tuple[object, ...], Any] = {}
        self._single: Any = None if labelnames else self._new()

    def _new(self) -> Any:
        return _Histogram(self._buckets) if self.kind == "histogram" else _Value()

    def labels(self, *values: object) -> Any:
        child = self._children.get(values)  # label values are usually strings already
        if child is None:
            key = tuple(str(v) for v in values)
            child = self._children.get(key)
            if child is None:
                if len(key) != len(self.labelnames):
                    raise ValueError(f"{self.name} takes labels {self.labelnames}")
                child = self._children[key] = self._new()
        return child

    # Unlabelled use.
    def inc(self, amount: float = 1.0) -> None:
        self._single.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self._single.value -= amount

    def set(self, value: float) -> None:
        self._single.value = value

    def observe(self, value: float) -> None:
        self._single.observe(value)

    def family(self) -> Metric:
        family: Any
        labels = list(self.labelnames)
        if self.kind == "counter":
            family = CounterMetricFamily(self.name, self.doc, labels=labels)
        elif self.kind == "gauge":
            family = GaugeMetricFamily(self.name, self.doc, labels=labels)
        else:
            family = HistogramMetricFamily(self.name, self.doc, labels=labels)
        children: Iterable[tuple[tuple[object, ...], Any]] = (
            self._children.items() if self.labelnames else [((), self._single)]
        )
        for key, child in children:
            if self.kind == "histogram":
                family.add_metric([str(k) for k in key], child.buckets(), child.sum)
            else:
                family.add_metric([str(k) for k in key], child.value)
        out: Metric = family
        return out


def Counter(name: str, doc: str, labelnames: list[str] | None = None, **_: Any) -> Any:
    return _Family("counter", name, doc, tuple(labelnames or ()))


def Gauge(name: str, doc: str, labelnames: list[str] | None = None, **_: Any) -> Any:
    return _Family("gauge", name, doc, tuple(labelnames or ()))


def Histogram(
    name: str,
    doc: str,
    labelnames: list[str] | None = None,
    *,
    buckets: tuple[float, ...] = LATENCY_BUCKETS,
    **_: Any,
) -> Any:
    return _Family("histogram", name, doc, tuple(labelnames or ()), tuple(buckets))


class _Callback(Collector):
    def __init__(self, families: Callable[[], Iterable[Metric]]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families()


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self._families: list[_Family] = []
        self.connections = Gauge(
            "livecart_connections", "Open WebSocket connections", ["role"], registry=r
        )
        self.frames_in = Counter(
            "livecart_frames_in_total", "Client frames received, by type", ["type"], registry=r
        )
        self.frames_out = Counter(
            "livecart_frames_out_total", "Server frames sent (each a batch)", registry=r
        )
        self.messages_out = Counter(
            "livecart_messages_out_total", "Server messages sent inside frames", registry=r
        )
        self.bytes_out = Counter("livecart_bytes_out_total", "Bytes of frames sent", registry=r)
        self.outbox_depth = Histogram(
            "livecart_outbox_depth_bytes",
            "Bytes waiting for a client in its socket's write buffer, sampled whenever a frame "
            "of personal messages is written",
            buckets=BYTES_BUCKETS,
            registry=r,
        )
        self.closes = Counter(
            "livecart_closes_total", "WebSocket closes, by close code", ["code"], registry=r
        )
        self.drops = Counter(
            "livecart_dropped_messages_total",
            "Messages dropped with a connection closed for being too slow",
            registry=r,
        )
        self.chat_sampled = Counter(
            "livecart_chat_sampled_total",
            "Chat messages skipped by huge-room sampling (per frame shared by a room)",
            registry=r,
        )
        self.chat_acks = Counter(
            "livecart_chat_acks_total", "Chat messages acknowledged", registry=r
        )
        self.chat_ack_seconds = Histogram(
            "livecart_chat_ack_seconds",
            "Chat frame received to ack queued (includes the archive commit)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.chat_refused = Counter(
            "livecart_chat_refused_total",
            "Chat messages refused or held, by code",
            ["code"],
            registry=r,
        )
        self.moderation_actions = Counter(
            "livecart_moderation_actions_total",
            "Moderation actions, by kind",
            ["action"],
            registry=r,
        )
        self.buy_attempts = Counter(
            "livecart_buy_attempts_total", "Buy attempts, by outcome", ["outcome"], registry=r
        )
        self.order_seconds = Histogram(
            "livecart_order_seconds",
            "Buy received to order committed or refused",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.offers_sold_out = Counter(
            "livecart_offers_sold_out_total", "Offers that reached zero remaining", registry=r
        )
        self.ranking_events = Counter(
            "livecart_ranking_events_total",
            "Events ingested by the ranking core",
            ["kind"],
            registry=r,
        )
        self.push_seconds = Histogram(
            "livecart_ranking_push_seconds",
            "Ranking event to the feed/trending push that reflects it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_lag = Gauge(
            "livecart_event_loop_lag_seconds",
            "Event-loop scheduling delay, last sample",
            registry=r,
        )
        self.bus_lag = Gauge(
            "livecart_bus_lag_seconds",
            "Chat message stamped to its delivery to this node's hub (sampled), last sample",
            registry=r,
        )
        self.db_seconds = Histogram(
            "livecart_db_query_seconds",
            "Database statements, and connections held for a transaction, by kind",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._pool_stats: Callable[[], tuple[int, int, int, int]] | None = None
        self._rooms: Callable[[], int] | None = None
        self._families = [v for v in vars(self).values() if isinstance(v, _Family)]
        r.register(_Callback(self._collect))

    def track_pool(self, stats: Callable[[], tuple[int, int, int, int]]) -> None:
        """`stats()` returns (size, in use, max size, waiting) of the database pool."""
        self._pool_stats = stats

    def track_rooms(self, count: Callable[[], int]) -> None:
        self._rooms = count

    def _collect(self) -> Iterable[Metric]:
        for family in self._families:
            yield family.family()
        if self._pool_stats is not None:
            size, in_use, max_size, waiting = self._pool_stats()
            yield GaugeMetricFamily("livecart_db_pool_size", "Open database connections", size)
            yield GaugeMetricFamily("livecart_db_pool_in_use", "Connections checked out", in_use)
            yield GaugeMetricFamily("livecart_db_pool_max", "Pool size limit", max_size)
            yield GaugeMetricFamily(
                "livecart_db_pool_waiting", "Tasks waiting for a free connection", waiting
            )
        if self._rooms is not None:
            yield GaugeMetricFamily(
                "livecart_joined_sessions", "Sessions with viewers on this node", self._rooms()
            )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def watch_loop_lag(self, interval: float = 0.5) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(interval)
            self.loop_lag.set(max(0.0, time.monotonic() - started - interval))
