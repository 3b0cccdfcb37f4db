"""kneelib: grading knee osteoarthritis (Kellgren-Lawrence 0-4) with squeeze-and-excitation networks.

A thin library behind the notebooks in ``notebooks/``; see README.md for the data flow.
"""

__version__ = "0.1.0"

from kneelib.errors import KneelibError

__all__ = ["KneelibError", "__version__"]
