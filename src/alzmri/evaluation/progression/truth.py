"""Where the synthetic truth says a brain changed between two visits, on the images a run sees.

``alzmri synth --longitudinal`` writes, for every visit but the first, the change mask: the
strength (0–1 of full scale) of the disease atrophy that advanced since the subject's previous
visit, on that visit's scan grid. Each mask is carried onto the model grid through the scan's
recorded scanner affine (through the registration too) and, for slices, cut and resized like the
slice. Between two visits ``a`` and ``b`` of the same subject and slice the planted change is the
strongest change of the visits after ``a`` up to ``b`` (one mask for adjacent visits).

This is the planted region the change maps are judged against: enrichment = mean |change| where
the truth planted change (strength ≥ ``level``) over mean |change| in the brain; 1 = no better
than spread evenly over the brain. Unlike atlas regions (a structure whose border moves changes
on both sides of its label boundary, and mostly not inside it) it is exactly where the images
differ by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.data.slices.atlas import on_rows
from alzmri.data.synth.derivatives import change_path, strength_on_grid
from alzmri.generate.data import visits_in_order
from alzmri.preprocessing.pipeline import scanner_affine
from alzmri.utils.errors import AlzmriError


def planted_strengths(rows: pd.DataFrame, inputs: object, cache_dir: Path, shape: tuple[int, ...], truth: Path) -> np.ndarray:
    """``(N, *S)`` float32: per row, the strength of the change planted since the subject's previous visit (0 at the first visit).

    Args:
        rows: the images' cache rows (a slice cache's rows, or a volume cache's).
        inputs: the cache's settings.
        cache_dir: the cache.
        shape: ``(C, *S)`` of one image.
        truth: the cohort's ``derivatives/synth`` folder.
    """
    first = {(str(v["participant_id"].iloc[0]), str(v["session_id"].iloc[0])) for v in visits_in_order(rows)}

    def change(row: pd.Series, grid_shape: tuple[int, ...], qc: dict) -> np.ndarray:
        pid, ses = str(row["participant_id"]), str(row["session_id"])
        affine = scanner_affine(qc)
        if affine is None:
            raise AlzmriError(f"the cache's record of {pid} {ses} predates scanner affines (needed to put the truth on its grid); "
                              "re-run the same 'alzmri preprocess' command (and 'alzmri slices')")  # fmt: skip
        if (pid, ses) in first and not any((Path(truth) / pid / ses / "anat").glob("*_desc-change_mask.nii.gz")):
            return np.zeros(grid_shape, np.float32)  # a first visit: nothing changed before it
        return strength_on_grid(change_path(truth, pid, ses), grid_shape, affine)

    found = on_rows(rows, inputs, cache_dir, shape, change, order=0, required=True)
    if found is None:
        raise AlzmriError(f"the preprocessing records of {cache_dir} do not give the images' grid (made before grid shapes were recorded?); re-run 'alzmri preprocess'")
    return found.astype(np.float32, copy=False)


def planted_between(strength: np.ndarray, rows: pd.DataFrame, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Per (start, end) pair of rows of one subject and slice: the strongest planted change of the visits after ``start`` up to ``end``.

    Only the visits among ``rows`` count: a visit left out (failed QC, a stage outside the run's)
    drops its change mask too, and the planted region is then smaller than the truth's.
    """
    order = np.zeros(len(rows), dtype=int)
    group = np.zeros(len(rows), dtype=int)
    for g, visits in enumerate(visits_in_order(rows)):
        index = visits["_row"].to_numpy()
        order[index], group[index] = np.arange(len(index)), g
    out = np.zeros((len(start), *strength.shape[1:]), np.float32)
    for i, (a, b) in enumerate(zip(start, end, strict=True)):
        between = np.flatnonzero((group == group[a]) & (order > order[a]) & (order <= order[b]))
        if len(between):
            out[i] = strength[between].max(axis=0)
    return out
