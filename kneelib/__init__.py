"""kneelib: grading knee osteoarthritis (Kellgren-Lawrence 0-4) with squeeze-and-excitation networks.

A thin library behind the notebooks in ``notebooks/``; see README.md for the data flow.
"""

__version__ = "0.1.0"

from kneelib import cpu_pin
from kneelib.errors import KneelibError

cpu_pin.wait_passively()  # before torch loads OpenMP: idle threads sleep rather than spin (shared cores)

__all__ = ["KneelibError", "__version__"]
