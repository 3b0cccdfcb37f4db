"""kneelib.pipeline: one command regenerates every table and figure — profiles, the notebook sweep.

:mod:`~kneelib.pipeline.profiles` names the grids and recipes (``smoke``, ``paper``);
:mod:`~kneelib.pipeline.notebooks` executes the notebooks with papermill and keeps the committed copies;
:mod:`~kneelib.pipeline.reproduce` schedules the training runs and the result notebooks.

May import every layer below it; only :mod:`kneelib.cli` imports it.
"""

from kneelib.pipeline.notebooks import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    REPO_ROOT,
    execute_notebook,
    parameters_cell_names,
    timed_notebook,
    update_committed_notebooks,
)
from kneelib.pipeline.profiles import ALL_ARCHS, PROFILES, Layout, Profile, get_profile
from kneelib.pipeline.reproduce import reproduce, run_finished

__all__ = [
    "ALL_ARCHS",
    "NOTEBOOKS",
    "NOTEBOOK_DIR",
    "PROFILES",
    "REPO_ROOT",
    "Layout",
    "Profile",
    "execute_notebook",
    "get_profile",
    "parameters_cell_names",
    "reproduce",
    "run_finished",
    "timed_notebook",
    "update_committed_notebooks",
]
