"""No import cycle in `src/livecart`: every module is parsed (not imported) and every import
counts, those under `if TYPE_CHECKING:` and inside functions included, relative ones
resolved. An edge `a -> b` means module `a` names module `b` (or a name of `b`) in an import;
importing a package's module counts as an edge to that module, not to its parents."""

from __future__ import annotations

import ast
from pathlib import Path

import livecart

SRC = Path(livecart.__file__).parent

# Edges still to cut, each documented; empty this as they go. A test below fails when an
# edge listed here no longer exists, so the list never outlives its reason.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the module `name` at `path` imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                if node.module:
                    base.append(node.module)
                target = ".".join(base)
            else:
                target = node.module or ""
            # `from pkg import mod` imports the module `pkg.mod` when there is one; the
            # package itself counts only for names that are not modules of it.
            subs = {f"{target}.{alias.name}" for alias in node.names}
            found.update(subs & known)
            if not subs <= known:
                found.add(target)
    return {m for m in found if m in known and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(name, path, known) for name, path in mods.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_relative_type_only_and_package_imports(tmp_path: Path) -> None:
    module = tmp_path / "hub.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from .connection import Connection\n"
        "from . import wire\n"
    )
    known = {"pkg", "pkg.hub", "pkg.connection", "pkg.wire"}
    # A type-only import counts; `from . import wire` is the module, not the package.
    assert imports("pkg.hub", module, known) == {"pkg.connection", "pkg.wire"}
    edges = graph()
    # `from .rules import chat as rules` (relative, into a subpackage)
    assert "livecart.chat.rules.chat" in edges["livecart.chat.service"]
    # `from . import store as store` names the module chat/store.py
    assert "livecart.chat.store" in edges["livecart.chat.service"]


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_src() -> None:
    edges = graph()
    cut = {a: {b for b in targets if (a, b) not in ALLOWED} for a, targets in edges.items()}
    assert cycles(cut) == []


def test_every_allowed_edge_still_exists() -> None:
    edges = graph()
    gone = sorted(e for e in ALLOWED if e[1] not in edges.get(e[0], set()))
    assert gone == [], "remove these from ALLOWED: they were cut"


# The gateway: the modules of `livecart.realtime` that own sockets and frames.
GATEWAY = {
    f"livecart.realtime.{m}"
    for m in (
        "wire",
        "handshake",
        "http",
        "connection",
        "hub",
        "room",
        "endpoint",
        "lifecycle",
        "inbox",
        "handlers",
    )
}

MODERATION = (
    "livecart.chat.service",
    "livecart.chat.model",
    "livecart.chat.review_queue",
    "livecart.chat.shared_limits",
)


def test_moderation_reaches_neither_node_nor_gateway_nor_ranking() -> None:
    """The moderation service and its rules stand below the runtime: it reaches the node
    through ports and leaves sockets to the gateway."""
    edges = graph()
    for name, targets in edges.items():
        if name in MODERATION or name.startswith("livecart.chat.rules"):
            bad = {
                t
                for t in targets
                if t in ("livecart.runtime.node", "livecart.ranking") or t in GATEWAY
            }
            assert bad == set(), name
