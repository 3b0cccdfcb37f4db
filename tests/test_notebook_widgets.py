"""The committed notebooks' widget outputs read well when opened before anything runs (#21).

JupyterLab draws a saved widget only in a trusted notebook, from ``metadata.widgets`` (the renderer of
``application/vnd.jupyter.widget-view+json`` is registered ``safe: false``); otherwise it shows the next safe
MIME type. So every widget output needs a readable ``text/html`` stand-in, and its model (and every model
that one references) must be in the stored state."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
VIEW, STATE = "application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_widget_outputs_have_stored_state_and_a_safe_stand_in(path: Path) -> None:
    nb = json.loads(path.read_text())
    views = [(i, o["data"]) for i, c in enumerate(nb["cells"]) for o in c.get("outputs", [])
             if VIEW in o.get("data", {})]
    if not views:
        return
    state = nb["metadata"]["widgets"][STATE]
    assert (state["version_major"], state["version_minor"]) == (2, 0)
    models = state["state"]
    missing = set(re.findall(r"IPY_MODEL_([0-9a-f]{32})", json.dumps(models))) - set(models)
    assert not missing, f"{path.name}: stored state references models it lacks: {sorted(missing)}"
    for i, data in views:
        assert data[VIEW]["model_id"] in models, f"{path.name} cell {i}: its widget is not in the stored state"
        html = "".join(data.get("text/html", []))
        assert "Run All Cells" in html, f"{path.name} cell {i}: untrusted viewers would see only the widget's repr"
