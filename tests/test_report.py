"""The evaluation report: banners, threshold hand-over from validation to test, figures, bad tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from alzmri.cli.main import app


def predictions(n_val: int = 40, n_test: int = 70, seed: int = 0) -> pd.DataFrame:
    """A CN/AD predictions table with val and test subjects, 1–2 sessions each, informative probabilities."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, n in (("val", n_val), ("test", n_test)):
        for i in range(n):
            diagnosis = "AD" if i % 2 else "CN"
            for s in range(1 + i % 3 // 2):
                p = 1 / (1 + np.exp(-rng.normal(1.0 if diagnosis == "AD" else -1.0, 1.3)))
                rows.append({"participant_id": f"sub-{split}{i:03d}", "session_id": f"ses-{s + 1}", "split": split, "diagnosis": diagnosis,
                             "prob_CN": round(1 - p, 6), "prob_AD": round(p, 6), "predicted": "AD" if p >= 0.5 else "CN",
                             "image_hash": f"{split}{i:03d}{s}".ljust(16, "0")})  # fmt: skip
    return pd.DataFrame(rows)


def run_report(table: pd.DataFrame, tmp_path: Path, *args: str):
    path = tmp_path / "predictions.tsv"
    table.to_csv(path, sep="\t", index=False)
    result = CliRunner().invoke(app, ["report", str(path), "--out", str(tmp_path / "report"), "--bootstrap", "500", *args])
    return result, tmp_path / "report"


def test_clean_table_gives_a_full_report_without_banners(tmp_path: Path) -> None:
    from alzmri.evaluation.metrics import subject_level
    from alzmri.evaluation.stats import choose_threshold

    table = predictions()
    result, out = run_report(table, tmp_path, "--prevalence", "0.2")
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    assert "Leakage audit passed" in page and "LEAKAGE" not in page and "Small sample" not in page
    assert len(re.findall(r"<img [^>]*src='data:image/png;base64,", page)) == 5  # confusion, ROC, PR, calibration, PPV/NPV
    assert "<script" not in page and "http" not in page  # self-contained
    for name in ("confusion_matrix", "roc", "pr", "calibration", "predictive_values"):
        assert (out / f"{name}.png").stat().st_size > 5000
    report = json.loads((out / "metrics.json").read_text())
    test = table[table["split"] == "test"]
    assert report["n_scans"] == len(test) and report["evaluated"] == "split 'test'"

    # The threshold is chosen on the validation subjects and applied unchanged to the test subjects.
    val_subjects = subject_level(table[table["split"] == "val"], ["CN", "AD"])
    chosen = choose_threshold(val_subjects["diagnosis"] == "AD", val_subjects["prob_AD"])
    clinical = report["clinical"]
    assert clinical["threshold"]["threshold"] == pytest.approx(chosen["threshold"])
    test_subjects = subject_level(test, ["CN", "AD"])
    called = test_subjects["prob_AD"] >= chosen["threshold"]
    positive = test_subjects["diagnosis"] == "AD"
    assert clinical["counts"] == {"tp": int((called & positive).sum()), "fn": int((~called & positive).sum()),
                                  "tn": int((~called & ~positive).sum()), "fp": int((called & ~positive).sum())}  # fmt: skip
    # PPV at the stated prevalence, by Bayes' rule from the posterior means (close to the posterior mean of PPV).
    se, sp, p = clinical["sensitivity"]["mean"], clinical["specificity"]["mean"], 0.2
    assert clinical["ppv"]["mean"] == pytest.approx(se * p / (se * p + (1 - sp) * (1 - p)), abs=0.03)
    assert clinical["ppv"]["low"] < clinical["ppv"]["mean"] < clinical["ppv"]["high"]
    ci = report["intervals"]["scan_level"]["balanced_accuracy"]
    assert ci["low"] < report["scan_level"]["balanced_accuracy"] < ci["high"] and ci["n_resamples"] == 500


def test_a_subject_in_two_splits_shows_the_leakage_banner(tmp_path: Path) -> None:
    table = predictions()
    leaked = table[table["split"] == "val"].iloc[:1].assign(split="test", session_id="ses-9", image_hash="x" * 16)
    result, out = run_report(pd.concat([table, leaked]), tmp_path)
    assert result.exit_code == 0, result.output
    assert "LEAKAGE" in result.output and "LEAKAGE: these results are not valid" in (out / "report.html").read_text()
    audit = json.loads((out / "metrics.json").read_text())["audit"]
    assert audit["leaky"] and audit["subjects_in_several_splits"] == [{"participant_id": "sub-val000", "splits": ["test", "val"]}]


def test_the_same_image_in_two_splits_is_leakage_too(tmp_path: Path) -> None:
    table = predictions()
    table.loc[table.index[-1], "image_hash"] = table["image_hash"].iloc[0]  # a val image re-filed as a test scan
    result, out = run_report(table, tmp_path)
    assert result.exit_code == 0 and "LEAKAGE" in (out / "report.html").read_text()
    assert json.loads((out / "metrics.json").read_text())["audit"]["images_in_several_splits"][0]["splits"] == ["test", "val"]


def test_small_samples_are_flagged(tmp_path: Path) -> None:
    result, out = run_report(predictions(n_test=40), tmp_path)  # 20 subjects per class
    assert result.exit_code == 0
    assert "Small sample" in (out / "report.html").read_text()
    assert json.loads((out / "metrics.json").read_text())["small_sample"] == {"CN": 20, "AD": 20}


def test_one_subject_of_a_class_still_gives_a_report_that_says_what_it_left_out(tmp_path: Path) -> None:
    table = predictions(n_test=12)
    test_ad = table[(table["split"] == "test") & (table["diagnosis"] == "AD")]["participant_id"].unique()
    table = table[~table["participant_id"].isin(test_ad[1:])]  # one AD subject left in test
    result, out = run_report(table, tmp_path)
    assert result.exit_code == 0, result.output
    skipped = json.loads((out / "metrics.json").read_text())["not_computed"]
    assert "DeLong AUC interval" in skipped and "1 positive" in skipped["DeLong AUC interval"]
    assert "not computed: DeLong AUC interval" in result.output
    html = (out / "report.html").read_text()
    assert "Not computed" in html and "DeLong AUC interval" in html and "nan%" not in html


def test_a_table_from_another_tool_without_split_or_sessions(tmp_path: Path) -> None:
    table = predictions()[["participant_id", "diagnosis", "prob_CN", "prob_AD"]].drop_duplicates("participant_id")
    path = tmp_path / "other.csv"
    table.to_csv(path, index=False)
    result = CliRunner().invoke(app, ["report", str(path), "--bootstrap", "200"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["n_scans"] == len(table) and report["clinical"]["threshold"]["chosen_on"] == "default 0.5"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.drop(columns=["diagnosis"]), "diagnosis"),
        (lambda t: t.assign(prob_CN=t["prob_CN"] * 0.8), "sum to .*, not 1"),
        (lambda t: t.assign(diagnosis="AD"), "at least two true classes"),
        (lambda t: t.assign(prob_AD=t["prob_AD"].where(t.index != 3)), "NaN|empty|missing"),
    ],
    ids=["missing-column", "not-summing", "single-class", "nan"],
)
def test_bad_tables_get_one_line_errors(tmp_path: Path, change, message) -> None:
    result, _ = run_report(change(predictions(n_val=6, n_test=6)), tmp_path)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), lines


def test_compare_two_models_on_the_same_subjects(tmp_path: Path) -> None:
    from alzmri.evaluation.compare_runs import compare

    good = predictions(seed=1)
    rng = np.random.default_rng(5)
    noise = rng.uniform(0, 1, len(good)).round(6)  # model B: uninformative
    bad = good.assign(prob_AD=noise, prob_CN=(1 - noise).round(6), predicted=np.where(noise >= 0.5, "AD", "CN"))
    for name, table in (("a", good), ("b", bad)):
        (tmp_path / name).mkdir()
        table.to_csv(tmp_path / name / "predictions.tsv", sep="\t", index=False)
    result = compare(tmp_path / "a", tmp_path / "b", n_resamples=500)
    assert result["n_subjects"] == 70 and set(result["delong"]) == {"AD"}
    assert result["delong"]["AD"]["auc_a"] > 0.75 > result["delong"]["AD"]["auc_b"] and result["delong"]["AD"]["p_value"] < 0.01
    assert result["balanced_accuracy_difference"]["low"] > 0 and result["mcnemar"]["b"] > result["mcnemar"]["c"]
    same = compare(tmp_path / "a", tmp_path / "a", n_resamples=200)
    assert same["delong"]["AD"]["p_value"] == 1.0 and same["mcnemar"]["p_value"] == 1.0

    (tmp_path / "c").mkdir()
    good.iloc[:-3].to_csv(tmp_path / "c" / "predictions.tsv", sep="\t", index=False)
    done = CliRunner().invoke(app, ["compare", str(tmp_path / "a"), str(tmp_path / "c")])
    assert done.exit_code == 2 and "do not hold the same scans" in done.stderr


def test_compare_cross_validations_with_the_corrected_t_test(tmp_path: Path) -> None:
    from alzmri.evaluation.compare_runs import compare

    base = np.array([0.70, 0.74, 0.68, 0.72, 0.71])
    for name, shift in (("cv-a", np.array([0.06, 0.04, 0.05, 0.07, 0.03])), ("cv-b", np.zeros(5))):
        (tmp_path / name).mkdir()
        pd.DataFrame({"fold": range(5), "n_scans": 40, "n_subjects": 20, "accuracy": base + shift, "balanced_accuracy": base + shift,
                      "macro_f1": base, "macro_auc": base + 0.1}).to_csv(tmp_path / name / "cv_folds.tsv", sep="\t", index=False)  # fmt: skip
    result = compare(tmp_path / "cv-a", tmp_path / "cv-b")
    assert result["kind"] == "cv" and result["n_train"] == 120 and result["n_test"] == 40
    bacc = result["metrics"]["balanced_accuracy"]
    diffs = np.array([0.06, 0.04, 0.05, 0.07, 0.03])
    se = np.sqrt((1 / 5 + 40 / 120) * diffs.var(ddof=1))  # Nadeau & Bengio
    assert bacc["corrected_t"]["t"] == pytest.approx(diffs.mean() / se)
    assert bacc["bayesian"]["p_a_better"] > 0.9
    assert "macro_auc" in result["metrics"] and "accuracy" in result["metrics"]


def test_per_class_bootstrap_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

    from alzmri.evaluation.report import _bootstrap_metrics, _per_class_metrics, with_row_brier

    rng = np.random.default_rng(2)
    classes = ["CN", "MCI", "AD"]
    probs = rng.dirichlet([1, 1, 1], 80)
    table = pd.DataFrame({"participant_id": [f"s{i}" for i in range(80)], "diagnosis": rng.choice(classes, 80)})
    for i, c in enumerate(classes):
        table[f"prob_{c}"] = probs[:, i]
    table["predicted"] = np.asarray(classes)[probs.argmax(axis=1)]
    metrics = _per_class_metrics(classes)
    for c in classes:
        y, yhat = table["diagnosis"], table["predicted"]
        assert metrics[f"{c}/precision"](table) == pytest.approx(precision_score(y, yhat, labels=[c], average=None)[0])
        assert metrics[f"{c}/recall"](table) == pytest.approx(recall_score(y, yhat, labels=[c], average=None)[0])
        assert metrics[f"{c}/specificity"](table) == pytest.approx(recall_score(y != c, yhat != c))
        assert metrics[f"{c}/f1"](table) == pytest.approx(f1_score(y, yhat, labels=[c], average=None)[0])
        assert metrics[f"{c}/auc"](table) == pytest.approx(roc_auc_score(y == c, table[f"prob_{c}"]))
    headline = _bootstrap_metrics(classes)
    assert headline["macro_f1"](table) == pytest.approx(f1_score(table["diagnosis"], table["predicted"], average="macro"))
    assert headline["brier"](with_row_brier(table, classes)) == pytest.approx(((probs - (table["diagnosis"].to_numpy()[:, None] == classes)) ** 2).sum(1).mean())
