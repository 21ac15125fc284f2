"""``alzmri baseline`` and ``alzmri cv --model pca_logreg``: a linear model on brain voxels, evaluated like a network."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alzmri.evaluation.baseline import LinearBaseline, baseline
from alzmri.evaluation.compare_runs import compare
from alzmri.evaluation.config import BaselineConfig, CrossValidateConfig
from alzmri.evaluation.predictions import read_predictions
from alzmri.utils.errors import AlzmriError

from conftest import brain_volume
from test_cli_errors import alzmri

# The columns 'alzmri evaluate' writes (predictions_table + split + image_hash).
EVALUATE_COLUMNS = ["participant_id", "session_id", "split", "diagnosis", "prob_CN", "prob_AD", "predicted", "image_hash"]
RADIUS = {"CN": 0.15, "MCI": 0.28, "AD": 0.42}  # 'ventricles' grow with disease


def write_cache(root: Path, classes: tuple[str, ...] = ("CN", "MCI", "AD"), n_per_class: int = 6, masks: bool = False) -> tuple[Path, Path]:
    """A preprocessing cache of 16³ arrays written directly (no preprocessing) and a split of it by subject.

    Per class: subjects 0–2 train, 3 val, 4–5 test; even subjects have two sessions. With
    ``masks`` the manifest has a ``mask`` column: a central 8³ cube per scan.
    """
    from alzmri.preprocessing.cache import write_config
    from alzmri.preprocessing.config import PreprocessConfig

    cache, split = root / "cache", root / "split"
    (cache / "arrays").mkdir(parents=True)
    split.mkdir()
    rng = np.random.default_rng(0)
    rows, parts = [], {"train": [], "val": [], "test": []}
    for c, diagnosis in enumerate(classes):
        for i in range(n_per_class):
            pid = f"sub-{c}{i:02d}"
            for s in range(1 + (i % 2 == 0)):
                ses = f"ses-{s + 1:02d}"
                volume = brain_volume((16, 16, 16), ventricle=RADIUS[diagnosis] + rng.normal(0, 0.02), seed=100 * c + 10 * i + s)
                row = {"participant_id": pid, "session_id": ses, "diagnosis": diagnosis, "array": f"arrays/{pid}_{ses}.npy"}
                np.save(cache / row["array"], volume.astype(np.float16))
                if masks:
                    row["mask"] = f"arrays/{pid}_{ses}.mask.npy"
                    cube = np.zeros((16, 16, 16), np.uint8)
                    cube[4:12, 4:12, 4:12] = 1
                    np.save(cache / row["mask"], cube)
                rows.append(row)
                parts["train" if i < 3 else "val" if i == 3 else "test"].append({k: row[k] for k in ("participant_id", "session_id", "diagnosis")})
    pd.DataFrame(rows).to_csv(cache / "manifest.tsv", sep="\t", index=False)
    write_config(cache, PreprocessConfig(size=16, spacing=2.0, skull_strip="none"))
    for name, part in parts.items():
        pd.DataFrame(part).to_csv(split / f"{name}.tsv", sep="\t", index=False)
    return cache, split


@pytest.fixture(scope="module")
def three_class(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_cache(tmp_path_factory.mktemp("three-class"))


@pytest.fixture(scope="module")
def baseline_run(prepared: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``alzmri baseline`` run once from the command line on the tiny CN/AD cohort."""
    out = tmp_path_factory.mktemp("baseline-runs")
    result = alzmri("baseline", prepared["cache"], prepared["split"], "--out", out, "--bootstrap", "200")
    assert result.returncode == 0, result.stderr
    (run,) = out.iterdir()
    return {"run": run, "stdout": result.stdout, "out": out}


def spy_searches(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Record every GridSearchCV fit: its rows, groups, folds and the fitted search."""
    from sklearn.model_selection import GridSearchCV

    calls: list[dict] = []
    original = GridSearchCV.fit

    def fit(self, X, y=None, **params):
        fitted = original(self, X, y, **params)
        calls.append({"n_rows": len(X), "groups": set(params["groups"]), "cv": self.cv, "search": self, "X": X})
        return fitted

    monkeypatch.setattr(GridSearchCV, "fit", fit)
    return calls


def test_baseline_writes_a_run_folder_that_evaluate_would(baseline_run: dict, prepared: dict[str, Path]) -> None:
    run = baseline_run["run"]
    assert run.name.startswith("pca_logreg-")
    for name in ("config.json", "model.npz", "search.tsv", "search.json", "result.json", "eval-test/predictions.tsv", "eval-test/report.html", "eval-test/metrics.json"):
        assert (run / name).is_file(), name
    table = pd.read_csv(run / "eval-test" / "predictions.tsv", sep="\t", dtype=str)
    assert list(table.columns) == EVALUATE_COLUMNS
    read_predictions(run / "eval-test" / "predictions.tsv")  # passes the validation 'alzmri report' applies
    test_split = pd.read_csv(prepared["split"] / "test.tsv", sep="\t", dtype=str)
    val_split = pd.read_csv(prepared["split"] / "val.tsv", sep="\t", dtype=str)
    assert set(table.loc[table["split"] == "test", "participant_id"]) == set(test_split["participant_id"])
    assert set(table.loc[table["split"] == "val", "participant_id"]) == set(val_split["participant_id"])  # val predicted: the threshold split
    metrics = json.loads((run / "eval-test" / "metrics.json").read_text())
    # Easy data: the ventricles separate CN from AD. Shuffled labels would not give these.
    assert metrics["scan_level"]["balanced_accuracy"] >= 0.75
    assert metrics["scan_level"]["auc"]["AD"] > 0.8
    assert "split 'val'" in metrics["clinical"]["threshold"]["chosen_on"]
    # The command prints the chosen hyper-parameters, the inner-CV score and the headline metrics.
    out = baseline_run["stdout"]
    assert "inner-CV balanced accuracy" in out and "C = " in out and "balanced accuracy" in out and "AUC AD vs rest" in out
    search = json.loads((run / "search.json").read_text())
    assert search["best_params"]["components"] in (0.5, 0.8, 0.95) and search["best_params"]["C"] in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    assert len(pd.read_csv(run / "search.tsv", sep="\t")) == 15  # 3 PCA sizes x 5 C values
    model = LinearBaseline.load(run / "model.npz")  # plain arrays: np.load(..., allow_pickle=False)
    assert model.classes == ("CN", "AD") and model.mask.sum() == search["n_voxels"]


def test_rerun_reports_the_finished_result_and_writes_nothing(baseline_run: dict, prepared: dict[str, Path]) -> None:
    run = baseline_run["run"]
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    again = alzmri("baseline", prepared["cache"], prepared["split"], "--out", baseline_run["out"], "--bootstrap", "200")
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout and "inner-CV balanced accuracy" in again.stdout and "AUC AD vs rest" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before
    assert [p.name for p in baseline_run["out"].iterdir()] == [run.name]  # same settings, same folder


def test_compare_takes_baseline_run_folders(baseline_run: dict, prepared: dict[str, Path]) -> None:
    svm = baseline(BaselineConfig(cache=prepared["cache"], split=prepared["split"], model="linear_svm", out=baseline_run["out"], bootstrap=200))
    assert Path(svm["run"]).name.startswith("linear_svm-") and svm["auc"]["AD"] > 0.8
    result = compare(baseline_run["run"], Path(svm["run"]), n_resamples=200)
    assert result["kind"] == "predictions" and result["n_subjects"] == 4 and set(result["delong"]) == {"AD"}
    itself = compare(baseline_run["run"], baseline_run["run"], n_resamples=200)
    assert itself["balanced_accuracy_difference"]["estimate"] == 0
    cli = alzmri("compare", baseline_run["run"], svm["run"], "--bootstrap", "200")
    assert cli.returncode == 0 and "DeLong" in cli.stdout, cli.stderr


@pytest.mark.parametrize("model", ["pca_logreg", "linear_svm"])
def test_multiclass_search_sees_only_training_subjects_and_the_npz_is_the_model(
    three_class: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    import alzmri.evaluation.baseline as module

    cache, split = three_class
    masks_from: list[set[str]] = []
    real_mask = module.brain_mask
    monkeypatch.setattr(module, "brain_mask", lambda scans, *a: masks_from.append(set(scans["participant_id"])) or real_mask(scans, *a))
    searches = spy_searches(monkeypatch)
    result = baseline(BaselineConfig(cache=cache, split=split, model=model, out=tmp_path, bootstrap=200))

    train = pd.read_csv(split / "train.tsv", sep="\t", dtype=str)
    (call,) = searches
    assert call["groups"] == set(train["participant_id"]) and call["n_rows"] == len(train)
    assert masks_from == [set(train["participant_id"])]
    folds = [(set(train["participant_id"].iloc[a]), set(train["participant_id"].iloc[b])) for a, b in call["cv"]]
    assert len(folds) == 3 and all(not (a & b) for a, b in folds)  # no subject on both sides of an inner fold
    assert result["search"]["inner_folds"] == [sorted(b) for _, b in folds]

    stored = LinearBaseline.load(Path(result["run"]) / "model.npz")
    expected = call["search"].best_estimator_.predict_proba(call["X"])
    np.testing.assert_allclose(stored.predict_proba(call["X"]), expected, atol=1e-5)
    _, classes = read_predictions(Path(result["out"]) / "predictions.tsv")
    assert classes == ["CN", "MCI", "AD"] and result["clinical"] is None  # no binary operating point for three classes
    assert result["balanced_accuracy"] > 0.6  # chance is 1/3


def test_classes_option_and_cache_brain_masks_with_downsampling(tmp_path: Path) -> None:
    cache, split = write_cache(tmp_path / "data", masks=True)
    full = baseline(BaselineConfig(cache=cache, split=split, classes=["CN", "AD"], out=tmp_path / "runs", bootstrap=200))
    assert full["search"]["n_voxels"] == 8**3  # the manifest's masks, not the background rule
    assert LinearBaseline.load(Path(full["run"]) / "model.npz").classes == ("CN", "AD")
    assert set(pd.read_csv(Path(full["out"]) / "predictions.tsv", sep="\t")["diagnosis"]) == {"CN", "AD"}
    pooled = baseline(BaselineConfig(cache=cache, split=split, classes=["CN", "AD"], downsample=2, out=tmp_path / "runs", bootstrap=200))
    assert pooled["search"]["n_voxels"] == 4**3 and pooled["run"] != full["run"]
    assert pooled["auc"]["AD"] > 0.8


def test_a_run_stopped_after_the_fit_only_redoes_the_evaluation(three_class: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, split = three_class
    config = BaselineConfig(cache=cache, split=split, out=tmp_path, bootstrap=200)
    first = baseline(config)
    run = Path(first["run"])
    (run / "result.json").unlink()
    shutil.rmtree(run / "eval-test")
    searches = spy_searches(monkeypatch)
    again = baseline(config)
    assert searches == [] and not again["finished_before"]  # model.npz reused, no new search
    assert again["balanced_accuracy"] == first["balanced_accuracy"] and (run / "eval-test" / "report.html").is_file()
    assert baseline(config)["finished_before"]


def test_leaky_split_and_bad_settings_are_refused(three_class: tuple[Path, Path], tmp_path: Path) -> None:
    cache, split = three_class
    leaky = tmp_path / "leaky"
    shutil.copytree(split, leaky)
    train = pd.read_csv(leaky / "train.tsv", sep="\t", dtype=str)
    test = pd.read_csv(leaky / "test.tsv", sep="\t", dtype=str)
    pd.concat([test, train.iloc[:1]]).to_csv(leaky / "test.tsv", sep="\t", index=False)
    with pytest.raises(AlzmriError, match="leaky split"):
        baseline(BaselineConfig(cache=cache, split=leaky, out=tmp_path / "runs"))
    with pytest.raises(AlzmriError, match="at most"):  # more components than an inner fold has scans
        baseline(BaselineConfig(cache=cache, split=split, components=[500], out=tmp_path / "runs"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("model.npz"))
    with pytest.raises(ValueError, match="fractions of the variance"):
        BaselineConfig(cache=cache, split=split, components=[1.5])
    result = alzmri("baseline", cache, leaky, "--out", tmp_path / "cli")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "leaky split" in result.stderr


def test_cv_runs_the_baseline_on_every_fold(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.evaluation.cross_validate import cross_validate

    out = tmp_path / "cv"
    result = cross_validate(CrossValidateConfig(cache=prepared["cache"], model="pca_logreg", folds=3, out=out))
    folds = pd.read_csv(out / "cv_folds.tsv", sep="\t")
    assert list(folds["fold"]) == [0, 1, 2] and result["folds"] == 3
    for k in range(3):
        predictions = out / f"fold-{k}" / "eval-test" / "predictions.tsv"
        assert list(pd.read_csv(predictions, sep="\t").columns) == EVALUATE_COLUMNS
        tested = set(pd.read_csv(out / "folds" / f"fold-{k}" / "test.tsv", sep="\t")["participant_id"])
        assert set(pd.read_csv(predictions, sep="\t").query("split == 'test'")["participant_id"]) == tested
        trained = set(pd.read_csv(out / "folds" / f"fold-{k}" / "train.tsv", sep="\t")["participant_id"])
        assert set(sum(json.loads((out / f"fold-{k}" / "search.json").read_text())["inner_folds"], [])) == trained
    assert folds["macro_auc"].mean() > 0.8
    assert compare(out, out)["kind"] == "cv"  # 'alzmri compare CV_A CV_B' takes it


def test_train_points_baseline_models_to_the_baseline_command(prepared: dict[str, Path], tmp_path: Path) -> None:
    result = alzmri("train", prepared["cache"], prepared["split"], "--model", "pca_logreg", "--out", tmp_path)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "alzmri baseline" in result.stderr and "Traceback" not in result.stderr
    assert not os.listdir(tmp_path)
