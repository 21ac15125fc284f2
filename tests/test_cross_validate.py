"""``alzmri cv``: one run per subject-level fold and a mean ± sd summary."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from alzmri.data.audit import find_leaks
from alzmri.data.splits import read_split_dir

from test_cli_errors import alzmri

pytestmark = pytest.mark.slow


def test_cv_trains_each_fold_and_summarises(prepared: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "cv"
    result = alzmri("cv", prepared["cache"], "--folds", "3", "--epochs", "1", "--batch-size", "4", "--out", out, "--no-progress", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert "mean ± sd" in result.stdout and result.stdout.count("── fold") == 3
    folds = pd.read_csv(out / "cv_folds.tsv", sep="\t")
    assert list(folds["fold"]) == [0, 1, 2]
    tested = set()
    for k in range(3):
        splits = read_split_dir(out / "folds" / f"fold-{k}")
        assert not find_leaks(splits)
        tested |= set(splits["test"]["participant_id"])
        assert (out / f"fold-{k}" / "eval-test" / "predictions.tsv").is_file()
    assert tested == set(pd.read_csv(prepared["cache"] / "manifest.tsv", sep="\t")["participant_id"])  # every subject tested once
    summary = json.loads((out / "cv_summary.json").read_text())
    mean = summary["metrics"]["balanced_accuracy"]["mean"]
    assert mean == pytest.approx(folds["balanced_accuracy"].mean())
    # Re-running resumes: every fold run is reported finished, nothing retrains.
    again = alzmri("cv", prepared["cache"], "--folds", "3", "--epochs", "1", "--batch-size", "4", "--out", out, "--no-progress", "--threads", "1")
    assert again.returncode == 0 and again.stdout.count("already finished") == 3
