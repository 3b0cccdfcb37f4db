"""Images per split × class — the paper's Table 1 (``kneelib stats``)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence

import pandas as pd

from kneelib.data.layout import Sample, discover, splits_present
from kneelib.data.schemes import Scheme, get_scheme

POOL_ROW = "all"
TOTAL = "total"


def class_counts(source: str | os.PathLike | Sequence[Sample], scheme: str | Scheme = "kl5", *,
                 totals: bool = True) -> pd.DataFrame:
    """Count images per split (rows: train, val, test present; a pool is one row ``all``) and class
    (columns: the scheme's class names). ``totals`` adds a ``total`` column and, with more than one
    row, a ``total`` row."""
    samples = discover(source) if isinstance(source, (str, os.PathLike)) else list(source)
    scheme = get_scheme(scheme)
    rows = [POOL_ROW if s is None else s for s in splits_present(samples)]
    table = pd.DataFrame(0, index=pd.Index(rows, name="split"),
                         columns=pd.Index(list(scheme.class_names), name="class"), dtype=int)
    for (row, name), n in Counter((POOL_ROW if s.split is None else s.split, scheme.class_name(s.grade))
                                  for s in samples).items():
        table.loc[row, name] = n
    if totals:
        table[TOTAL] = table.sum(axis=1)
        if len(table) > 1:
            table.loc[TOTAL] = table.sum(axis=0)
    return table


def counts_dict(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """``{split: {class: n}}`` from :func:`class_counts` (total row/column dropped)."""
    body = table.drop(index=TOTAL, columns=TOTAL, errors="ignore")
    return {str(r): {str(c): int(body.loc[r, c]) for c in body.columns} for r in body.index}
