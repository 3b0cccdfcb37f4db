"""kneelib.evaluate: trained runs + a data split → logits → metrics, single runs and seed ensembles.

:mod:`~kneelib.evaluate.inference` rebuilds a run from its ``config.json`` and runs it over images with the
preprocessing it recorded; :mod:`~kneelib.evaluate.ensemble` is the paper's logit-mean ensemble;
:mod:`~kneelib.evaluate.metrics` computes accuracy, QWK, MAE, F1, ROC-AUC, ECE with bootstrap CIs (sklearn);
:mod:`~kneelib.evaluate.calibration` fits a temperature per run on its val split;
:mod:`~kneelib.evaluate.split_evaluation` writes ``metrics.json`` and per-image predictions (:func:`featured_metrics`:
the ensemble's, or a single run's); :mod:`~kneelib.evaluate.sweep_groups` evaluates a sweep's seed groups once and
caches them under ``OUT/eval`` (:class:`SweepResults`: one sweep's results, what the notebooks use).

May import: :mod:`kneelib.data`, :mod:`kneelib.models`, :mod:`kneelib.train` (run files, devices),
``errors``, ``atomic``.
"""

from kneelib.evaluate.calibration import expected_calibration_error, fit_temperature, reliability
from kneelib.evaluate.ensemble import ensemble_probabilities, softmax
from kneelib.evaluate.inference import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    ENSEMBLE,
    RUN_CONFIG_RULES,
    ImageSource,
    LoadedRun,
    as_device,
    check_compatible,
    check_fields,
    forward,
    input_batch,
    load_run,
    load_runs,
    read_run_config,
    run_logits,
)
from kneelib.evaluate.metrics import METRIC_KEYS, compute_metrics
from kneelib.evaluate.split_evaluation import (
    ALL_SPLITS,
    calibrate_runs,
    evaluate_runs,
    featured_metrics,
    format_summary,
    save_metrics,
    save_predictions,
)
from kneelib.evaluate.sweep_groups import (
    SweepResults,
    evaluate_group,
    evaluate_sweep,
    group_runs,
    metrics_by_run,
    se_gains,
)

__all__ = [
    "ALL_SPLITS",
    "CHECKPOINT_FILE",
    "CONFIG_FILE",
    "ENSEMBLE",
    "ImageSource",
    "LoadedRun",
    "RUN_CONFIG_RULES",
    "METRIC_KEYS",
    "SweepResults",
    "as_device",
    "calibrate_runs",
    "expected_calibration_error",
    "fit_temperature",
    "reliability",
    "check_compatible",
    "compute_metrics",
    "ensemble_probabilities",
    "evaluate_group",
    "evaluate_runs",
    "evaluate_sweep",
    "featured_metrics",
    "format_summary",
    "forward",
    "group_runs",
    "metrics_by_run",
    "input_batch",
    "load_run",
    "load_runs",
    "read_run_config",
    "check_fields",
    "run_logits",
    "save_metrics",
    "save_predictions",
    "se_gains",
    "softmax",
]
