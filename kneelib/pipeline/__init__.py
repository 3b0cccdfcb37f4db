"""kneelib.pipeline: one command regenerates every table and figure — profiles, the notebook sweep.

:mod:`~kneelib.pipeline.profiles` names the grids and recipes (``smoke``, ``paper``);
:mod:`~kneelib.pipeline.notebooks` executes the notebooks with papermill and keeps the committed copies;
:mod:`~kneelib.pipeline.reproduce` schedules the training runs and the result notebooks;
:mod:`~kneelib.pipeline.executors` runs the training notebooks in local processes or as Ray tasks.

May import every layer below it; only :mod:`kneelib.cli` imports it.
"""

from kneelib.pipeline.executors import EXECUTORS, LocalExecutor, RayExecutor, make_executor, train_model
from kneelib.pipeline.notebooks import (
    NOTEBOOK_DIR,
    NOTEBOOKS,
    REPO_ROOT,
    execute_notebook,
    parameters_cell_names,
    timed_notebook,
    update_committed_notebooks,
)
from kneelib.pipeline.profiles import ALL_ARCHS, PROFILES, Layout, Profile, get_profile, resolve_jobs
from kneelib.pipeline.reproduce import reproduce, run_finished

__all__ = [
    "ALL_ARCHS",
    "EXECUTORS",
    "NOTEBOOKS",
    "NOTEBOOK_DIR",
    "PROFILES",
    "REPO_ROOT",
    "Layout",
    "LocalExecutor",
    "Profile",
    "RayExecutor",
    "execute_notebook",
    "get_profile",
    "make_executor",
    "parameters_cell_names",
    "reproduce",
    "resolve_jobs",
    "run_finished",
    "timed_notebook",
    "train_model",
    "update_committed_notebooks",
]
