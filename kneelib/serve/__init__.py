"""kneelib.serve: use trained models — grade new crops, export them, explain them, browse them.

:mod:`~kneelib.serve.predict` grades crops with one run or a seed ensemble (evaluation's own
preprocessing and ensemble arithmetic); :mod:`~kneelib.serve.export` writes ONNX/TorchScript files with
a sidecar and runs them; :mod:`~kneelib.serve.explain` computes Grad-CAM maps;
:mod:`~kneelib.serve.explorer` is the notebooks' ipywidgets picker.

May import: :mod:`kneelib.evaluate`, :mod:`kneelib.train` (run files), :mod:`kneelib.data`,
:mod:`kneelib.models`, ``errors``, ``atomic``.
"""

from kneelib.serve.explain import ensemble_gradcam, overlay, write_overlays
from kneelib.serve.explorer import browse
from kneelib.serve.export import ExportedModel, export_runs, sidecar_path
from kneelib.serve.predict import (
    Grader,
    Predictor,
    grade_images,
    load_grader,
    predict_images,
)

__all__ = [
    "ExportedModel",
    "Grader",
    "Predictor",
    "browse",
    "ensemble_gradcam",
    "export_runs",
    "grade_images",
    "load_grader",
    "overlay",
    "predict_images",
    "sidecar_path",
    "write_overlays",
]
