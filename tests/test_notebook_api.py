"""The notebooks' API: what a notebook imports from kneelib is a package's public name, and every import sits in
its one import cell (the first code cell after the parameters). Read with :mod:`ast`; nothing is executed."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def code_cells(path: Path) -> list[tuple[list[str], ast.Module]]:
    """Each code cell's tags and syntax tree (IPython magics left out)."""
    cells = []
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            python = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
            cells.append((cell["metadata"].get("tags", []), ast.parse(python, filename=f"{path.name}")))
    return cells


def imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_one_import_cell(path: Path) -> None:
    cells = [tree for tags, tree in code_cells(path) if not {"parameters", "injected-parameters"} & set(tags)]
    late = [ast.unparse(n) for tree in cells[1:] for n in imports(tree)]
    assert not late, f"{path.name}: imports outside its import cell: {late}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_notebook_calls_what_the_packages_export(path: Path) -> None:
    """``from kneelib.<package> import name``: ``name`` is in the package's ``__all__`` or one of its modules."""
    for _, tree in code_cells(path):
        for node in imports(tree):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("kneelib.") for a in node.names), ast.unparse(node)
                continue
            if not (node.module or "").startswith("kneelib"):
                continue
            package = importlib.import_module(node.module)
            assert hasattr(package, "__path__"), f"{path.name}: imports from a module: {ast.unparse(node)}"
            public = set(getattr(package, "__all__", ()))
            for alias in node.names:
                is_module = importlib.util.find_spec(f"{node.module}.{alias.name}") is not None
                assert alias.name in public or is_module, f"{path.name}: {node.module}.{alias.name} is not exported"
