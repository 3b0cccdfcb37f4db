"""Tables (with the paper's numbers beside ours) and figures — the import point of the report layer.

The code lives in :mod:`kneelib.report.tables`, :mod:`kneelib.report.figures` and
:mod:`kneelib.report.gradcam_figures` (Grad-CAM and bilateral figures) and :mod:`kneelib.report.recipe_ablation` (the
training-recipe ablation: its results file, table and curves); import from here.
Pure functions of metrics dicts, prediction/history DataFrames and arrays; the only I/O is the optional
:func:`save_table` / :func:`save_figure` (atomic, deterministic bytes).
"""

from kneelib.report.budget import budget_curves_figure, budget_table, seed_histories_figure
from kneelib.report.figures import (
    choose_examples,
    confusion_matrix_figure,
    learning_curves_figure,
    prediction_figure,
    probability_figure,
    reliability_figure,
    roc_figure,
    save_figure,
    se_excitation_figure,
    select_model,
)
from kneelib.report.gradcam_figures import (
    bilateral_figure,
    explained_examples,
    heatmap_figure,
    right_and_wrong,
)
from kneelib.report.recipe_ablation import (
    ablation_table,
    conditions_record,
    load_ablation,
    recipe_curves_figure,
    save_ablation,
    third_seed_table,
    variant_record,
)
from kneelib.report.tables import (
    RESULT_COLUMNS,
    RESULT_SUMMARY_COLUMNS,
    format_table,
    markdown_table,
    overhead_table,
    results_summary,
    results_table,
    run_key,
    save_table,
    se_gain_table,
    table1,
    table6,
)

__all__ = [
    "RESULT_COLUMNS", "RESULT_SUMMARY_COLUMNS", "ablation_table", "conditions_record", "load_ablation",
    "recipe_curves_figure", "save_ablation", "third_seed_table", "variant_record",
    "budget_curves_figure", "budget_table", "seed_histories_figure",
    "bilateral_figure", "explained_examples", "heatmap_figure",
    "right_and_wrong",
    "choose_examples", "confusion_matrix_figure", "format_table", "learning_curves_figure", "markdown_table", "overhead_table",
    "prediction_figure", "probability_figure", "reliability_figure", "results_summary", "results_table", "roc_figure", "run_key", "save_figure", "save_table",
    "se_excitation_figure", "se_gain_table", "select_model", "table1", "table6",
]
