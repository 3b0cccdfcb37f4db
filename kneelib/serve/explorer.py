"""An ``ipywidgets`` image explorer for the notebooks: pick a file from a list or upload one.

:func:`browse` builds the widget; the notebook supplies ``show(path)``, which displays whatever it
wants for one image (a probability chart, a graded bilateral radiograph). Uploads are written to a
temporary folder that is removed once ``show`` returns.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path


def browse(options: Mapping[str, str], show: Callable[[str], None], *, label: str = "image",
           accept: str = "image/*", show_first: bool = True) -> object:
    """A dropdown of ``options`` (label -> path) and an upload button above an output panel.

    Choosing an entry or uploading a file calls ``show(path)`` inside the panel; ``show_first``
    shows the first entry at once. Returns the ``ipywidgets.VBox`` (the cell's last value).
    Under papermill/nbclient only one explorer per notebook should ``show_first``: output captured
    into a second Output widget during execution never completes there.
    """
    import ipywidgets as widgets

    picker = widgets.Dropdown(options=list(options.items()), description=label)
    upload = widgets.FileUpload(accept=accept, multiple=False, description="upload")
    panel = widgets.Output()

    def on_pick(change: object = None) -> None:
        with panel:
            panel.clear_output(wait=True)
            if picker.value:
                show(picker.value)

    def on_upload(change: object) -> None:
        for item in upload.value:
            with tempfile.TemporaryDirectory() as tmp, panel:
                path = Path(tmp) / Path(item["name"]).name
                path.write_bytes(bytes(item["content"]))
                panel.clear_output(wait=True)
                show(str(path))

    picker.observe(on_pick, names="value")
    upload.observe(on_upload, names="value")
    if show_first:
        on_pick()
    return widgets.VBox([widgets.HBox([picker, upload]), panel])
