"""kneelib.radiograph: from a full bilateral radiograph (PNG/JPEG/DICOM) to two graded knee crops.

:mod:`~kneelib.radiograph.localizer` finds both knee joints (a small CNN, packaged under
``kneelib/radiograph/assets/localizer``) and cuts the crops; :mod:`~kneelib.radiograph.localizer_training` trains
it on synthetic radiographs; :mod:`~kneelib.radiograph.bilateral` grades both knees with a
:mod:`kneelib.serve` grader and draws the overview.

May import: :mod:`kneelib.serve` (graders), :mod:`kneelib.synthetic` (training radiographs),
:mod:`kneelib.train` (checkpoints, seeding), :mod:`kneelib.data`, ``errors``, ``atomic``.
It sits above ``serve`` because bilateral grading uses a grader.
"""

from kneelib.radiograph.bilateral import grade_bilateral, overview_image, write_outputs
from kneelib.radiograph.localizer import (
    PACKAGED_LOCALIZER,
    KneeBox,
    Localizer,
    crop_knee,
    default_localizer_path,
    evaluate_localizer,
    load_localizer,
)
from kneelib.radiograph.localizer_training import train_localizer

__all__ = [
    "PACKAGED_LOCALIZER",
    "KneeBox",
    "Localizer",
    "crop_knee",
    "default_localizer_path",
    "evaluate_localizer",
    "grade_bilateral",
    "load_localizer",
    "overview_image",
    "train_localizer",
    "write_outputs",
]
