"""The notebooks' ipywidgets explorer: a picker and an uploader calling ``show(path)``."""

from __future__ import annotations

import datetime
from pathlib import Path

from kneelib.serve.explorer import browse, fallback_html


def test_browse_shows_the_first_pick_then_each_new_one() -> None:
    shown: list[str] = []
    box = browse({"a.png": "/x/a.png", "b.png": "/x/b.png"}, shown.append, label="image")
    picker, upload = box.children[0].children
    assert picker.options == (("a.png", "/x/a.png"), ("b.png", "/x/b.png")) and shown == ["/x/a.png"]
    picker.value = "/x/b.png"
    assert shown == ["/x/a.png", "/x/b.png"]


def test_browse_without_show_first_and_with_an_upload() -> None:
    shown: list[tuple[str, bytes]] = []
    box = browse({}, lambda p: shown.append((Path(p).name, Path(p).read_bytes())), show_first=False)
    _, upload = box.children[0].children
    assert shown == []
    upload.value = ({"name": "../evil/knee.png", "type": "image/png", "size": 3, "content": memoryview(b"abc"),
                     "last_modified": datetime.datetime(2026, 1, 1)},)
    assert shown == [("knee.png", b"abc")]  # written under a temporary folder, its name only



def test_browse_display_carries_a_static_stand_in() -> None:
    """Untrusted JupyterLab skips the (unsafe) widget renderer: the bundle must offer safe HTML, not only repr."""
    box = browse({"a.png": "/x/a.png"}, lambda p: print("shown", p), label="image")
    data = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data and "Run All Cells" in data["text/html"]
    assert box.children[1].outputs == ({"output_type": "stream", "name": "stdout", "text": "shown /x/a.png\n"},)
    bare = browse({"r.png": "/x/r.png"}, lambda p: None, label="radiograph", show_first=False)._repr_mimebundle_()
    assert "radiograph" in bare["text/html"] and "<img" not in bare["text/html"]


def test_the_stand_in_shows_the_first_view_as_a_picture() -> None:
    first = ({"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=\n", "text/plain": "<Figure>"},
              "metadata": {}},)
    html = fallback_html("image", first, "a.png")
    assert '<img src="data:image/png;base64,iVBORw0KGgo=" alt="a.png">' in html and "Saved: a.png." in html
