"""kneelib.data: read images, label schemes, discover data layouts, filter, split and count.

The torch Dataset and transforms live in ``kneelib.data.dataset`` / ``transforms`` and the synthetic
generator in ``kneelib.synthetic.crops``; they are not imported here (no torch on ``import kneelib.data``).
``kneelib.data.paper`` (verify, prepare) compares a copy with the paper's data set and convert its variants;
:func:`verdict_line` is the one-line verdict the profiles print.
"""

from kneelib.data.io import IMAGE_SUFFIXES, is_image_file, read_image
from kneelib.data.layout import SPLITS, Sample, discover, parse_knee_name, select_split
from kneelib.data.schemes import SCHEME_NAMES, Scheme, get_scheme
from kneelib.data.split import describe_split
from kneelib.data.paper.verify import verdict_line

__all__ = [
    "IMAGE_SUFFIXES",
    "SCHEME_NAMES",
    "SPLITS",
    "Sample",
    "Scheme",
    "describe_split",
    "discover",
    "get_scheme",
    "is_image_file",
    "parse_knee_name",
    "read_image",
    "select_split",
    "verdict_line",
]
