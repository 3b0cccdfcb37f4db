"""The package layout is the architecture: layers import downwards only, and no module imports in a cycle.

Every ``import``/``from ... import`` of a kneelib module is counted, also those inside functions (the lazy
ones), so the check reads the source with :mod:`ast` rather than importing it. The layer check leaves out
imports under ``if TYPE_CHECKING:`` (they never run); the circle check counts them too: two modules that need
each other's names to be read are one concept split in two, whether or not Python would trip over it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import kneelib

PACKAGE = Path(kneelib.__file__).parent
#: Bottom to top, as in the README's Architecture section; a module may import its own layer and those
#: before it. ``errors``, ``atomic`` and ``cpu_pin`` are the foundation every layer may use.
LAYERS = ("errors", "atomic", "cpu_pin", "data", "synthetic", "models", "train", "evaluate", "serve", "radiograph",
          "report", "pipeline", "cli")
TOP_LEVEL_MODULES = {"__init__", "__main__", "errors", "atomic", "cpu_pin"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_names(path: Path, me: str | None = None, *, typing: bool = False) -> list[tuple[str, str | None]]:
    """``(module, name)`` for each kneelib import of ``path`` (module ``me``): ``name`` is None for
    ``import kneelib.x``; imports under ``if TYPE_CHECKING:`` only with ``typing``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = me or module_name(path)
    typing_only = set() if typing else {
        id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
        and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
        for stmt in node.body for n in ast.walk(stmt)}
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.startswith("kneelib")]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(me.split(".")[: len(me.split(".")) - node.level + (path.name == "__init__.py")]
                                + ([base] if base else []))
            if base.startswith("kneelib"):
                found += [(base, alias.name) for alias in node.names]
    return found


def kneelib_imports(path: Path, me: str | None = None, *, typing: bool = False) -> set[str]:
    """The kneelib modules ``path`` (module ``me``) imports (``from kneelib.x import y`` counts
    ``kneelib.x.y`` when that is a module)."""
    me = me or module_name(path)
    found: set[str] = set()
    for base, name in imported_names(path, me, typing=typing):
        found.add(base)
        if name and f"{base}.{name}" in ALL_MODULES:
            found.add(f"{base}.{name}")
    found.discard(me)
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))
ALL_MODULES = {module_name(p) for p in SOURCES}


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "kneelib"


def test_kneelib_is_packages_and_a_handful_of_modules() -> None:
    top = {p.stem for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL_MODULES, f"top-level modules beyond the foundation: {sorted(top - TOP_LEVEL_MODULES)}"
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(LAYERS) - TOP_LEVEL_MODULES


def test_every_package_names_its_public_api() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        tree = ast.parse(init.read_text())
        assert ast.get_docstring(tree), f"{init}: no docstring"
        if init.parent.name != "cli":
            names = [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                     if isinstance(t, ast.Name)]
            assert "__all__" in names, f"{init}: no __all__"


def check_layers(name: str, imports: set[str]) -> None:
    me = layer_of(name)
    if me in ("kneelib", "__main__"):
        return  # kneelib/__init__ and __main__ (the entry point) sit outside the layers
    rank = LAYERS.index(me)
    for target in imports:
        other = layer_of(target)
        if other == "kneelib":
            continue  # ``from kneelib import __version__``
        assert LAYERS.index(other) <= rank, f"{name} ({me}) imports {target} ({other}), a higher layer"


def test_every_public_name_is_importable() -> None:
    import importlib

    for init in PACKAGE.glob("*/__init__.py"):
        module = importlib.import_module(f"kneelib.{init.parent.name}")
        missing = [name for name in getattr(module, "__all__", ()) if not hasattr(module, name)]
        assert not missing, f"kneelib.{init.parent.name}.__all__ names what it does not import: {missing}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    check_layers(module_name(path), kneelib_imports(path))


def import_graph() -> dict[str, set[str]]:
    """Module → the kneelib modules it imports, anywhere in it (``TYPE_CHECKING`` included).

    A package's ``__init__`` only re-exports, so an import of a package stands for the module that defines
    the name: ``from kneelib.train import TrainConfig`` is an edge to ``kneelib.train.config``. What a package
    ``__init__`` itself imports is left out: importing a member always runs its package first, so those edges
    would make every re-exporting package a circle."""
    packages = {module_name(p): p for p in SOURCES if p.name == "__init__.py"}
    exports = {pkg: {name: base for base, name in imported_names(path, pkg, typing=True) if name}
               for pkg, path in packages.items()}
    graph: dict[str, set[str]] = {}
    for path in SOURCES:
        me = module_name(path)
        if me in packages:
            continue
        deps = set()
        for base, name in imported_names(path, me, typing=True):
            if name and f"{base}.{name}" in ALL_MODULES:
                deps.add(f"{base}.{name}")
            elif base in packages:
                deps.add(exports[base].get(name or "", base))
            else:
                deps.add(base)
        graph[me] = {d for d in deps if d in ALL_MODULES and d not in packages and d != me}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (``[a, b, ..., a]``), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_the_cycle_check_sees_typing_and_re_exported_imports(tmp_path: Path) -> None:
    """A circle closed by an import under ``TYPE_CHECKING`` or through a package's re-export is found."""
    a = tmp_path / "a.py"
    a.write_text("from typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n    from kneelib.train.config import TrainConfig\n")
    assert "kneelib.train.config" not in kneelib_imports(a, "kneelib.train.a")
    assert "kneelib.train.config" in kneelib_imports(a, "kneelib.train.a", typing=True)
    assert find_cycle({"m.a": {"m.b"}, "m.b": {"m.c"}, "m.c": {"m.a"}}) == ["m.a", "m.b", "m.c", "m.a"]
    assert find_cycle({"m.a": {"m.b"}, "m.b": set()}) is None
    graph = import_graph()
    # ``from kneelib.evaluate import ensemble_probabilities``: an edge to the module that defines it
    assert "kneelib.evaluate.ensemble" in graph["kneelib.serve.predict"]
    assert "kneelib.data.paper.verify" not in graph["kneelib.data.paper.report"]


def test_the_checker_sees_lazy_and_from_imports(tmp_path: Path) -> None:
    """The checks would catch a violation: a function-level import of a higher layer is found."""
    probe = PACKAGE / "data" / "io.py"
    found = kneelib_imports(probe)
    assert "kneelib.data.dicom" in found and "kneelib.data.pixels" in found
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from kneelib.pipeline import reproduce\n")
    imports = kneelib_imports(fake, "kneelib.data.probe")
    assert "kneelib.pipeline" in imports
    with pytest.raises(AssertionError, match="a higher layer"):
        check_layers("kneelib.data.probe", imports)


def test_the_cli_and_training_import_without_the_notebook_and_clinic_packages() -> None:
    """A GPU machine may lack papermill, pydicom, grad-cam, ipywidgets, Ray and kornia: ``kneelib train`` and
    ``benchmarks/bench.py`` must still start (those packages are imported where they are used)."""
    import subprocess
    import sys

    blocked = ("papermill", "pydicom", "pytorch_grad_cam", "ipywidgets", "nbformat", "ray", "kornia", "onnxscript")
    code = ("import sys\n"
            f"for m in {blocked!r}: sys.modules[m] = None\n"
            "from kneelib.cli import build_parser\n"
            "import kneelib.train.loop, kneelib.data.batched, kneelib.evaluate\n"
            "build_parser().parse_args(['train', '--data', 'd', '--arch', 'resnet18', '--out', 'o'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
