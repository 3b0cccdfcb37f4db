"""The notebooks' ipywidgets explorer: a picker and an uploader calling ``show(path)``."""

from __future__ import annotations

import datetime
from pathlib import Path

from kneelib.serve.explorer import browse


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
