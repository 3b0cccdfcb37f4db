"""The package layout is the architecture: layers import downwards only, and no module imports in a cycle.

Every ``import``/``from ... import`` of a kneelib module is counted, also those inside functions (the lazy
ones), so the check reads the source with :mod:`ast` rather than importing it.
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


def kneelib_imports(path: Path, me: str | None = None) -> set[str]:
    """The kneelib modules ``path`` (module ``me``) imports (``from kneelib.x import y`` counts
    ``kneelib.x.y`` when that is a module)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = me or module_name(path)
    found: set[str] = set()
    # Imports under ``if TYPE_CHECKING:`` never run: they annotate, they do not depend.
    typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for stmt in node.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kneelib"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(me.split(".")[: len(me.split(".")) - node.level + (path.name == "__init__.py")]
                                + ([base] if base else []))
            if not base.startswith("kneelib"):
                continue
            found.add(base)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if candidate in ALL_MODULES:
                    found.add(candidate)
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


def test_no_import_cycles() -> None:
    graph = {module_name(p): {t for t in kneelib_imports(p) if t in ALL_MODULES} for p in SOURCES}
    # A package's __init__ re-exports its modules: edges into a package stand for edges into its members,
    # so only module-to-module edges (not via __init__) can form a real cycle.
    packages = {m for m, p in zip(map(module_name, SOURCES), SOURCES) if p.name == "__init__.py"}
    graph = {m: {t for t in deps if t not in packages} for m, deps in graph.items() if m not in packages}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


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
