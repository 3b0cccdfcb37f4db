"""An ``ipywidgets`` image explorer for the notebooks: pick a file from a list or upload one.

:func:`browse` builds the widget; the notebook supplies ``show(path)``, which displays whatever it
wants for one image (a probability chart, a graded bilateral radiograph). Uploads are written to a
temporary folder that is removed once ``show`` returns.

A saved notebook keeps the explorer's widget state, but JupyterLab draws a stored widget only in a
*trusted* notebook (its widget renderer is registered as unsafe, so an untrusted output falls back to
the next safe MIME type); a notebook fresh from git is untrusted. The explorer's output therefore also
carries a static ``text/html`` stand-in: what to run, and a picture of what it showed first.
"""

from __future__ import annotations

import base64
import functools
import html
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

#: what an untrusted (or kernel-less, non-widget) viewer shows in place of the explorer
RUN_NOTE = ("<p><b>Interactive explorer</b> (ipywidgets): it works once this notebook's cells have run "
            "(<b>Run ▸ Run All Cells</b>, with kneelib installed), to pick another {label} or upload one. "
            "{saved}</p>")


def browse(options: Mapping[str, str], show: Callable[[str], None], *, label: str = "image",
           accept: str = "image/*", show_first: bool = True) -> object:
    """A dropdown of ``options`` (label -> path) and an upload button above an output panel.

    Choosing an entry or uploading a file calls ``show(path)`` inside the panel; ``show_first``
    shows the first entry at once (captured in the kernel and written to the panel's state, so a
    saved notebook keeps it, and copied into the static stand-in; an error in it fails the cell).
    Returns the ``ipywidgets.VBox`` (the cell's last value).
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
    first: tuple[dict[str, Any], ...] = ()
    if show_first and picker.value:
        first = _captured(show, picker.value)
        panel.outputs = first
    box = _explorer_class()([widgets.HBox([picker, upload]), panel])
    box.fallback_html = fallback_html(label, first, picker.label if first else None)
    return box


def _captured(show: Callable[[str], None], path: str) -> tuple[dict[str, Any], ...]:
    """``show(path)``'s output as nbformat outputs (stdout, stderr, rich displays), captured in the kernel."""
    from IPython.utils.capture import capture_output

    with capture_output() as cap:
        show(path)
    outputs: list[dict[str, Any]] = [{"output_type": "stream", "name": name, "text": text}
                                     for name, text in (("stdout", cap.stdout), ("stderr", cap.stderr)) if text]
    outputs += [{"output_type": "display_data", "data": dict(o.data), "metadata": dict(o.metadata or {})}
                for o in cap.outputs]
    return tuple(outputs)


def fallback_html(label: str, outputs: tuple[dict[str, Any], ...], shown: str | None) -> str:
    """The static stand-in: :data:`RUN_NOTE` and the PNG/JPEG images of ``outputs`` (``shown``: their entry)."""
    images = []
    for out in outputs:
        for mime in ("image/png", "image/jpeg"):
            data = out.get("data", {}).get(mime)
            if data:
                b64 = data if isinstance(data, str) else base64.b64encode(data).decode()
                images.append(f'<img src="data:{mime};base64,{b64.strip()}" alt="{html.escape(shown or label)}">')
                break
    saved = f"Saved: {html.escape(str(shown))}." if images else ""
    return RUN_NOTE.format(label=html.escape(label), saved=saved) + "".join(images)


@functools.cache
def _explorer_class() -> type:
    import ipywidgets as widgets

    class Explorer(widgets.VBox):
        """A VBox whose display also offers ``fallback_html`` (shown where the widget view is not)."""

        fallback_html = ""

        def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
            data = super()._repr_mimebundle_(**kwargs)
            if data is not None and self.fallback_html:
                data["text/html"] = self.fallback_html
            return data

    return Explorer
