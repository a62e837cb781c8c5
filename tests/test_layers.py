"""The package's import graph keeps the layers of DESIGN.md: no cycle, imports point down, and no library
module opens a file under conf/ (only the entry layer composes configs; ``tglassmlp.defaults`` is the one
owner of the defaults that bare library calls fall back on).

    python tests/test_layers.py        # prints cycles, upward imports and conf/ readers

Every ``import`` statement counts, module-level or inside a function (a deferred import is still a
dependency); ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "tglassmlp"

#: layers of DESIGN.md, lowest first; a module belongs to the first prefix it matches
LAYERS = (
    ("foundation", ("tglassmlp", "tglassmlp.atomic", "tglassmlp.statepoints", "tglassmlp.metrics",
                    "tglassmlp.tracking", "tglassmlp.paths", "tglassmlp.timegrid", "tglassmlp.defaults")),
    ("physics", ("tglassmlp.physics",)),
    ("observables", ("tglassmlp.observables",)),
    ("model", ("tglassmlp.model",)),
    ("data", ("tglassmlp.data",)),
    ("jobs", ("tglassmlp.training", "tglassmlp.simulation", "tglassmlp.transfer", "tglassmlp.ensemble",
              "tglassmlp.predict", "tglassmlp.analysis", "tglassmlp.callbacks")),
)
#: modules allowed to read conf/: where it is (paths) and the one owner of library defaults (defaults)
CONF_OWNERS = {"tglassmlp.paths", "tglassmlp.defaults"}
#: names that open the config tree
CONF_NAMES = {"load_config", "config_dir", "CONFIG_DIR"}
#: upward imports accepted, each with its reason (at most one, DESIGN.md)
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(name: str) -> int:
    best, rank = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (name == p or name.startswith(p + ".")) and len(p) > rank:
                best, rank = i, len(p)
    if best is None:
        raise AssertionError(f"module {name} is in no layer of tests/test_layers.py: add it")
    return best


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str | None:
    if node.level == 0:
        return node.module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, path.name == "__init__.py", node)
                if base is None:
                    continue
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                if not (t == "tglassmlp" or t.startswith("tglassmlp.")):
                    continue
                while t not in mods and "." in t:  # import a.b.c of a name c: the module a.b
                    t = t.rsplit(".", 1)[0]
                if t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted((a, b) for a, targets in graph.items() for b in targets if layer(b) > layer(a))


def conf_readers() -> list[str]:
    out = []
    for name, path in modules().items():
        if name in CONF_OWNERS:
            continue
        tree = ast.parse(path.read_text(), str(path))
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        if used & CONF_NAMES:
            out.append(name)
    return sorted(out)


def report() -> dict:
    graph = import_graph()
    return {"modules": len(graph), "cycles": cycles(graph), "upward": upward_imports(graph),
            "conf_readers": conf_readers()}


def test_no_import_cycle():
    found = cycles(import_graph())
    assert not found, f"import cycles among tglassmlp modules: {found}"


def test_imports_point_down():
    names = [n for n, _ in LAYERS]
    upward = [(a, b) for a, b in upward_imports(import_graph()) if (a, b) not in ALLOWED_UPWARD]
    assert not upward, "imports from a lower layer to a higher one: " + ", ".join(
        f"{a} ({names[layer(a)]}) -> {b} ({names[layer(b)]})" for a, b in upward)
    assert len(ALLOWED_UPWARD) <= 1


def test_no_library_module_reads_conf():
    assert conf_readers() == [], "library modules that open conf/ (pass settings objects instead)"


def test_reading_data_and_predicting_do_not_import_lightning():
    """Lightning is train.py's (tglassmlp.training.datamodule, tglassmlp.model.module): reading a shard or
    predicting with a trained ensemble must not pay its import (~10 s on loaded cores) nor need it installed. A
    fresh interpreter, so that other tests' imports do not count."""
    import os
    import subprocess

    code = ("import sys, tglassmlp.data, tglassmlp.data.structures, tglassmlp.predict, tglassmlp.model.artifact; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert out.stdout.strip() == "[]", out.stdout
    # the data module is where it went: it imports Lightning at module level
    tree = ast.parse((PACKAGE / "training" / "datamodule.py").read_text())
    assert "pytorch_lightning" in {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}


def test_the_checker_sees_a_cycle_and_an_upward_import():
    graph = {"tglassmlp.physics.a": {"tglassmlp.model.b"}, "tglassmlp.model.b": {"tglassmlp.physics.a"}}
    assert cycles(graph) == [["tglassmlp.model.b", "tglassmlp.physics.a"]]
    assert upward_imports(graph) == [("tglassmlp.physics.a", "tglassmlp.model.b")]


if __name__ == "__main__":
    r = report()
    names = [n for n, _ in LAYERS]
    print(f"{r['modules']} modules")
    print(f"import cycles: {len(r['cycles'])}")
    for c in r["cycles"]:
        print("   ", " <-> ".join(c))
    print(f"upward imports: {len(r['upward'])}")
    for a, b in r["upward"]:
        print(f"    {a} ({names[layer(a)]}) -> {b} ({names[layer(b)]})")
    print(f"library modules opening conf/: {len(r['conf_readers'])}")
    for m in r["conf_readers"]:
        print("   ", m)
