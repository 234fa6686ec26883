"""docs/grafana-dashboard.json is an importable Grafana dashboard whose queries only name
metrics that a livecart node exports.

Each check is a function returning the problems it finds; the tests run them on the real
dashboard (no problems) and on broken copies (the problem is reported), so every check is
known to be able to fail."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from livecart.runtime.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
METRIC_NAME = re.compile(r"livecart_[a-z_]+")
PANEL_TYPES = {"row", "timeseries", "stat"}
DS_REF = "${DS_PROMETHEUS}"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def families() -> list[Any]:
    """The metric families of a node's registry, the callback gauges (pool, rooms) included."""
    metrics = Metrics()
    metrics.track_pool(lambda: (1, 0, 10, 0))
    metrics.track_rooms(lambda: 0)
    return list(metrics.registry.collect())


def exported_names() -> set[str]:
    """Every series name a node's registry can expose, labelled children or not."""
    names: set[str] = set()
    for family in families():
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def exported_families() -> set[str]:
    return {family.name for family in families()}


def queries(dash: dict[str, Any]) -> list[str]:
    """Every PromQL text: panel targets and query variables."""
    out = [t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", [])]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var.get("query")
            out.append(q.get("query", "") if isinstance(q, dict) else str(q))
    return out


def used_names(dash: dict[str, Any]) -> set[str]:
    return {name for expr in queries(dash) for name in METRIC_NAME.findall(expr)}


# ---------------------------------------------------------------- checks


def structure_problems(dash: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for key in ("title", "uid", "panels", "schemaVersion"):
        if key not in dash:
            problems.append(f"missing top-level key {key!r}")
    if not isinstance(dash.get("title"), str) or not dash.get("title"):
        problems.append("title must be a non-empty string")
    uid = dash.get("uid")
    if not isinstance(uid, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        problems.append(f"uid {uid!r} is not a Grafana uid (1-40 of [A-Za-z0-9_-])")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        problems.append(f"schemaVersion {dash.get('schemaVersion')!r} is below 36")
    panels = dash.get("panels")
    if not isinstance(panels, list) or not panels:
        return [*problems, "panels must be a non-empty list"]
    seen: set[Any] = set()
    for p in panels:
        where = f"panel {p.get('id')!r} ({p.get('title')!r})"
        for key in ("id", "type", "title", "gridPos"):
            if key not in p:
                problems.append(f"{where}: missing {key!r}")
        if not isinstance(p.get("id"), int):
            problems.append(f"{where}: id must be an integer")
        elif p["id"] in seen:
            problems.append(f"{where}: duplicate panel id")
        seen.add(p.get("id"))
        if p.get("type") not in PANEL_TYPES:
            problems.append(f"{where}: type {p.get('type')!r} not in {sorted(PANEL_TYPES)}")
        if p.get("type") == "row":
            continue
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            problems.append(f"{where}: no targets")
            continue
        ref_ids = [t.get("refId") for t in targets]
        if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
            problems.append(f"{where}: refIds must be present and unique, got {ref_ids}")
        for t in targets:
            if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                problems.append(f"{where}: target {t.get('refId')!r} has no expr")
    return problems


def grid_problems(dash: dict[str, Any]) -> list[str]:
    """Every panel inside the 24-column grid, and no two panels overlapping."""
    problems: list[str] = []
    placed: list[tuple[Any, int, int, int, int]] = []
    for p in dash.get("panels", []):
        g = p.get("gridPos", {})
        try:
            x, y, w, h = (int(g[k]) for k in ("x", "y", "w", "h"))
        except (KeyError, TypeError, ValueError):
            problems.append(f"panel {p.get('id')!r}: gridPos needs integer x, y, w, h")
            continue
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > 24:
            problems.append(f"panel {p.get('id')!r}: gridPos {g} leaves the 24-column grid")
            continue
        for other, ox, oy, ow, oh in placed:
            if x < ox + ow and ox < x + w and y < oy + oh and oy < y + h:
                problems.append(f"panel {p.get('id')!r} overlaps panel {other!r}")
        placed.append((p.get("id"), x, y, w, h))
    return problems


def datasource_problems(dash: dict[str, Any]) -> list[str]:
    """The dashboard declares the DS_PROMETHEUS input and every query uses it."""
    problems: list[str] = []
    inputs = dash.get("__inputs", [])
    if not any(
        i.get("name") == "DS_PROMETHEUS"
        and i.get("type") == "datasource"
        and i.get("pluginId") == "prometheus"
        for i in inputs
    ):
        problems.append("no __inputs entry DS_PROMETHEUS of type datasource (prometheus)")

    def check(where: str, ds: Any) -> None:
        if not isinstance(ds, dict) or ds.get("uid") != DS_REF or ds.get("type") != "prometheus":
            problems.append(f"{where}: datasource {ds!r} does not reference {DS_REF}")

    for p in dash.get("panels", []):
        if p.get("type") == "row":
            continue
        check(f"panel {p.get('id')!r}", p.get("datasource"))
        for t in p.get("targets", []):
            check(f"panel {p.get('id')!r} target {t.get('refId')!r}", t.get("datasource"))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            check(f"variable {var.get('name')!r}", var.get("datasource"))
    return problems


def promql_problems(dash: dict[str, Any], known: set[str]) -> list[str]:
    """Queries name only exported metrics and have balanced brackets and quotes."""
    problems: list[str] = []
    for expr in queries(dash):
        if not METRIC_NAME.search(expr):
            problems.append(f"{expr!r} names no livecart metric")
        for name in METRIC_NAME.findall(expr):
            if name not in known:
                problems.append(f"{expr!r} uses {name}, which livecart does not export")
        depth = {"(": 0, "{": 0, "[": 0}
        closing = {")": "(", "}": "{", "]": "["}
        for ch in re.sub(r'"[^"]*"', '""', expr):
            if ch in depth:
                depth[ch] += 1
            elif ch in closing:
                depth[closing[ch]] -= 1
                if depth[closing[ch]] < 0:
                    break
        if any(depth.values()) or expr.count('"') % 2:
            problems.append(f"{expr!r} has unbalanced brackets or quotes")
    return problems


def coverage_problems(dash: dict[str, Any], families: set[str]) -> list[str]:
    """Every metric family a node exports appears on at least one panel."""
    used = used_names(dash)
    suffixes = ("", "_total", "_bucket", "_sum", "_count")
    return [
        f"metric {family} has no panel in {DASHBOARD.name}"
        for family in sorted(families)
        if not any(family + s in used for s in suffixes)
    ]


# ---------------------------------------------------------------- the real dashboard


def test_the_registry_names_are_what_the_checks_expect() -> None:
    known = exported_names()
    for name in (
        "livecart_connections",
        "livecart_frames_in_total",
        "livecart_chat_ack_seconds_bucket",
        "livecart_db_pool_in_use",
        "livecart_joined_sessions",
    ):
        assert name in known, f"{name} not exported: {sorted(known)}"
    assert "livecart_frames_in" not in known  # counters are only queried with _total


def test_dashboard_is_structurally_valid() -> None:
    assert structure_problems(load()) == []


def test_panels_fit_the_grid_without_overlapping() -> None:
    assert grid_problems(load()) == []


def test_every_query_uses_the_imported_datasource() -> None:
    assert datasource_problems(load()) == []


def test_queries_only_use_exported_metrics() -> None:
    dash = load()
    assert len(queries(dash)) >= 20
    assert promql_problems(dash, exported_names()) == []


def test_every_exported_metric_has_a_panel() -> None:
    assert coverage_problems(load(), exported_families()) == []


def test_dashboard_shows_what_on_call_needs() -> None:
    exprs = " ".join(queries(load()))
    for needed in (
        "sum by (role) (livecart_connections",
        "sum by (type) (rate(livecart_frames_in_total",
        "histogram_quantile(0.99, sum by (le) (rate(livecart_outbox_depth_bytes_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(livecart_chat_ack_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(livecart_order_seconds_bucket",
        "sum by (outcome) (rate(livecart_buy_attempts_total",
        "sum by (code) (rate(livecart_closes_total",
        "sum by (code) (rate(livecart_chat_refused_total",
        "livecart_offers_sold_out_total",
        "livecart_event_loop_lag_seconds",
    ):
        assert needed in exprs, f"no query contains {needed!r}"


# ---------------------------------------------------------------- the checks can fail


def broken(mutate: Any) -> dict[str, Any]:
    dash = copy.deepcopy(load())
    mutate(dash)
    return dash


def first_graph(dash: dict[str, Any]) -> dict[str, Any]:
    panel: dict[str, Any] = next(p for p in dash["panels"] if p["type"] != "row")
    return panel


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.pop("uid"), "missing top-level key 'uid'"),
        (lambda d: d.update(title=""), "title must be a non-empty string"),
        (lambda d: d.update(schemaVersion=30), "schemaVersion 30 is below 36"),
        (lambda d: d["panels"][2].update(id=d["panels"][1]["id"]), "duplicate panel id"),
        (lambda d: first_graph(d).update(type="graph"), "type 'graph' not in"),
        (lambda d: first_graph(d).update(targets=[]), "no targets"),
        (lambda d: first_graph(d)["targets"][0].update(expr=""), "has no expr"),
        (lambda d: first_graph(d).pop("gridPos"), "missing 'gridPos'"),
    ],
)
def test_structure_check_catches(mutate: Any, expected: str) -> None:
    problems = structure_problems(broken(mutate))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: first_graph(d)["gridPos"].update(x=20, w=8), "leaves the 24-column grid"),
        (lambda d: first_graph(d)["gridPos"].update(x=-1), "leaves the 24-column grid"),
        (lambda d: d["panels"][2].update(gridPos=dict(d["panels"][1]["gridPos"])), "overlaps"),
    ],
)
def test_grid_check_catches(mutate: Any, expected: str) -> None:
    problems = grid_problems(broken(mutate))
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(__inputs=[]),
        lambda d: first_graph(d).update(datasource={"type": "prometheus", "uid": "prod"}),
        lambda d: first_graph(d)["targets"][0].update(datasource=None),
    ],
)
def test_datasource_check_catches(mutate: Any) -> None:
    assert datasource_problems(broken(mutate))


def test_metric_check_catches_an_unknown_name_and_bad_syntax() -> None:
    known = exported_names()

    def rename(d: dict[str, Any]) -> None:
        t = first_graph(d)["targets"][0]
        t["expr"] = t["expr"] + " + sum(livecart_connection_count)"

    problems = promql_problems(broken(rename), known)
    assert any("livecart_connection_count" in p for p in problems), problems

    def unbalance(d: dict[str, Any]) -> None:
        first_graph(d)["targets"][0]["expr"] = "sum(rate(livecart_chat_acks_total[1m])"

    problems = promql_problems(broken(unbalance), known)
    assert any("unbalanced" in p for p in problems), problems


def test_coverage_check_catches_a_metric_without_panel() -> None:
    problems = coverage_problems(load(), {*exported_families(), "livecart_new_thing"})
    assert problems == [f"metric livecart_new_thing has no panel in {DASHBOARD.name}"]
