"""kneelib.synthetic: a procedural knee-radiograph generator, for smoke runs and tests without real data.

Crops graded KL 0–4 from a continuous severity (joint-space narrowing, osteophytes, sclerosis,
deformity), bilateral PA radiographs with their knee boxes, and montages that set synthetic crops beside
real ones. It writes data sets in the layouts :mod:`kneelib.data` reads.

May import: :mod:`kneelib.data` (preprocessing, readers, layouts), ``errors``, ``atomic``.
"""

from kneelib.synthetic.anatomy import CROP_MM, render_knee
from kneelib.synthetic.bilateral import render_bilateral, write_bilateral
from kneelib.synthetic.crops import generate_dataset, plan_dataset
from kneelib.synthetic.montage import grade_examples, synthetic_vs_real_montage

__all__ = [
    "CROP_MM",
    "generate_dataset",
    "grade_examples",
    "plan_dataset",
    "render_bilateral",
    "render_knee",
    "synthetic_vs_real_montage",
    "write_bilateral",
]
