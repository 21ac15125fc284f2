"""Fusion models end to end: training with a genetic table, the checkpoint rebuilding the encoders, evaluation, the ablation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from alzmri.utils.errors import AlzmriError
from tests.conftest import train_config


def _genetics(path: Path, participants: list[str], extra: str = "sub-999") -> Path:
    """APOE, three dosages and a categorical column for ``participants`` plus one participant without images."""
    rng = np.random.default_rng(1)
    rows = []
    for k, p in enumerate([*participants, extra]):
        rows.append({"participant_id": p, "APOE": ["e3/e3", "e3/e4", "e4/e4"][k % 3], "rs1": k % 3, "rs2": int(rng.integers(0, 3)),
                     "rs3": "" if k == 1 else int(rng.integers(0, 3)), "site": ["a", "b"][k % 2]})  # fmt: skip
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def _participants(prepared: dict[str, Path]) -> list[str]:
    return sorted(pd.read_csv(prepared["bids"] / "labels.tsv", sep="\t")["participant_id"].unique())


@pytest.fixture(scope="module")
def fusion_run(prepared: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fusion_xattn trained 2 epochs on the tiny cohort; the first participant has no genetic row (dropped)."""
    from alzmri.training.fit import fit

    root = tmp_path_factory.mktemp("fusion")
    everyone = _participants(prepared)
    table = _genetics(root / "genetics.tsv", everyone[1:])
    run = fit(train_config(prepared, model="fusion_xattn", encoder="liu_cnn_compact", genetics=table, epochs=2, out=root / "runs", trackers=[]))
    return {"run": run, "genetics": table, "root": root, "missing": everyone[0]}


def test_fusion_run_records_alignment_and_encoder(fusion_run: dict[str, Path], prepared: dict[str, Path]) -> None:
    from alzmri.io.checkpoint import read_checkpoint

    record = json.loads((fusion_run["run"] / "config.json").read_text())
    n = len(_participants(prepared))
    assert record["genetics"]["alignment"] == {"matched": n - 1, "imaging_only": 1, "genetics_only": 1}
    alignment = pd.read_csv(fusion_run["run"] / "genetics_alignment.tsv", sep="\t")
    assert alignment.set_index("participant_id").loc[fusion_run["missing"], "genetics"] == False  # noqa: E712
    assert "sub-999" in set(alignment["participant_id"])
    hp = read_checkpoint(fusion_run["run"] / "checkpoints" / "best-loss.ckpt")["hparams"]
    assert hp["model_kwargs"]["encoder"] == "liu_cnn_compact" and hp["model_kwargs"]["groups"] == [1, 1, 1, 1, 2]  # APOE, rs1-3, site=a|b
    assert "fusion_dropout" not in hp["model_kwargs"] and "dropout" not in hp["model_kwargs"]  # train's --dropout 0.5 is the image heads', not the attention's
    encoder = hp["genetics"]["encoder"]
    json.dumps(encoder)  # plain data: no pickle needed
    # fitted on the training participants only: their APOE mean, not the whole table's
    from alzmri.data.splits import read_split_dir

    train_ids = set(read_split_dir(prepared["split"])["train"]["participant_id"]) - {fusion_run["missing"]}
    table = pd.read_csv(fusion_run["genetics"], sep="\t").set_index("participant_id")
    e4 = table["APOE"].map({"e3/e3": 0, "e3/e4": 1, "e4/e4": 2})
    assert encoder["mean"][0] == pytest.approx(e4.loc[sorted(train_ids)].mean())
    assert encoder["mean"][0] != pytest.approx(e4.mean())


def test_checkpoint_round_trip_rebuilds_the_encoders(fusion_run: dict[str, Path], prepared: dict[str, Path]) -> None:
    from alzmri.data.genetics import GeneticEncoder
    from alzmri.evaluation.config import EvaluateConfig
    from alzmri.evaluation.evaluate import evaluate
    from alzmri.evaluation.predict import checkpoint_genetics, load_classifier
    from alzmri.io.genetics import read_genetics

    ckpt = fusion_run["run"] / "checkpoints" / "best-loss.ckpt"
    model, hp = load_classifier(ckpt)
    genetics = checkpoint_genetics(hp)
    assert genetics is not None and genetics.used
    participants = _participants(prepared)[1:]
    rebuilt, present = genetics.inputs(participants)
    fresh = GeneticEncoder.fit(read_genetics(fusion_run["genetics"]), sorted(participants))  # another fit differs ...
    assert present.all() and rebuilt.shape == (len(participants), 6)
    assert not np.allclose(rebuilt, fresh.transform(read_genetics(fusion_run["genetics"]), participants)[0])
    metrics = evaluate(EvaluateConfig(checkpoint=ckpt, cache=prepared["cache"], split=prepared["split"], out=fusion_run["root"] / "eval"))
    table = pd.read_csv(fusion_run["root"] / "eval" / "predictions.tsv", sep="\t")
    assert fusion_run["missing"] not in set(table["participant_id"])  # --missing-genetics drop applies when scoring too
    assert metrics["n_scans"] == int((table["split"] == "test").sum())
    # the stored predictions are the model's on these inputs: genetics changes them
    from alzmri.data.dataset import CachedVolumeDataset
    from alzmri.preprocessing.cache import read_cache

    cache, _ = read_cache(prepared["cache"])
    rows = cache.set_index(["participant_id", "session_id"]).loc[list(zip(table["participant_id"], table["session_id"], strict=True))].reset_index()
    images = torch.stack([CachedVolumeDataset(rows, hp["classes"])[i][0] for i in range(len(rows))])
    features, flags = genetics.inputs(rows["participant_id"])
    with torch.no_grad():
        probs = torch.softmax(model(images, torch.from_numpy(features), torch.from_numpy(flags)), 1).numpy()
        without = torch.softmax(model(images, torch.from_numpy(features), torch.zeros(len(rows), dtype=torch.bool)), 1).numpy()
    assert np.allclose(probs[:, 1], table[f"prob_{hp['classes'][1]}"], atol=1e-5)
    assert not np.allclose(probs, without)


def test_mask_keeps_participants_without_genetics(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.training.fit import prepare

    everyone = _participants(prepared)
    table = _genetics(tmp_path / "g.tsv", everyone[1:])
    drop = prepare(train_config(prepared, model="genetics_only", genetics=table))
    mask = prepare(train_config(prepared, model="genetics_only", genetics=table, missing_genetics="mask"))
    seen = pd.concat([mask["train"], mask["val"]])
    assert everyone[0] in set(seen["participant_id"])  # the fixture's split puts the first participant in train or val
    assert everyone[0] not in set(drop["train"]["participant_id"]) | set(drop["val"]["participant_id"])
    assert len(seen) == len(drop["train"]) + len(drop["val"]) + int((seen["participant_id"] == everyone[0]).sum())
    _, present = mask["genetics"]["encoder"].transform(mask["genetics"]["table"], list(seen["participant_id"]))
    assert (~present).sum() == (seen["participant_id"] == everyone[0]).sum() > 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model": "fusion_xattn"}, "give --genetics TABLE"),
        ({"model": "liu_cnn_compact", "encoder": "liu_cnn_compact", "genetics": "G"}, "has no image encoder"),
        ({"model": "fusion_xattn", "encoder": "small_cnn_2d", "genetics": "G"}, "encoder small_cnn_2d is 2D"),
        ({"model": "fusion_xattn", "encoder": "fusion_concat", "genetics": "G"}, "must be an image model"),
        ({"model": "fusion_xattn", "genetics": "NOBODY"}, "no participant of the images is in the genetic table"),
    ],
)
def test_fusion_settings_are_checked(prepared: dict[str, Path], tmp_path: Path, settings: dict, message: str) -> None:
    from alzmri.training.fit import prepare

    if settings.get("genetics") == "G":
        settings["genetics"] = _genetics(tmp_path / "g.tsv", _participants(prepared))
    elif settings.get("genetics") == "NOBODY":
        settings["genetics"] = _genetics(tmp_path / "g.tsv", ["other-1", "other-2"])
    with pytest.raises(AlzmriError, match=message):
        prepare(train_config(prepared, **settings))


def test_genetics_options_need_a_table() -> None:
    from pydantic import ValidationError

    from alzmri.training.config import TrainConfig

    with pytest.raises(ValidationError, match="need --genetics"):
        TrainConfig(cache=Path("c"), split=Path("s"), shuffle_genetics=True)


def test_shuffled_rows_move_across_participants(tmp_path: Path) -> None:
    from alzmri.data.genetics import shuffled
    from alzmri.io.genetics import read_genetics

    ids = [f"sub-{k:02d}" for k in range(20)]
    path = _genetics(tmp_path / "g.tsv", ids)
    table = read_genetics(path)
    reordered = tmp_path / "r.tsv"
    pd.read_csv(path, sep="\t").iloc[::-1].to_csv(reordered, sep="\t", index=False)
    a, b = shuffled(table, 3), shuffled(read_genetics(reordered), 3)
    assert a.values.sort_index().equals(b.values.sort_index())  # the file's row order does not matter
    assert sorted(a.values.index) == sorted(table.values.index)
    moved = (a.values.sort_index()["rs1"] != table.values.sort_index()["rs1"]).mean()
    assert moved > 0.3 and not shuffled(table, 4).values.sort_index().equals(a.values.sort_index())


def test_ablation_runs_every_arm_on_the_same_folds(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.evaluation.config import FusionAblationConfig
    from alzmri.evaluation.fusion_ablation import ablate

    table = _genetics(tmp_path / "g.tsv", _participants(prepared))
    out = tmp_path / "ablation"
    result = ablate(FusionAblationConfig(cache=prepared["cache"], genetics=table, out=out, folds=3, epochs=1, batch_size=4, encoder="liu_cnn_compact",
                                         arms=["genetics_only", "mri_only", "fusion_xattn", "shuffled_genetics"], progress=False, threads=1, trackers=[],
                                         bootstrap=200))  # fmt: skip
    arms = pd.read_csv(out / "ablation.tsv", sep="\t").set_index("arm")
    assert list(arms.index) == ["genetics_only", "mri_only", "fusion_xattn", "shuffled_genetics"]
    assert (arms["n_subjects"] == len(_participants(prepared))).all()  # every subject scored once, by the fold that held it out
    assert ((arms["auc_low"] <= arms["auc"]) & (arms["auc"] <= arms["auc_high"])).all()
    pooled = {arm: pd.read_csv(out / arm / "oof_predictions.tsv", sep="\t") for arm in arms.index}
    keys = {arm: set(zip(t["participant_id"], t["session_id"], strict=True)) for arm, t in pooled.items()}
    assert len({frozenset(k) for k in keys.values()}) == 1  # the same scans in every arm
    assert pooled["fusion_xattn"].groupby("participant_id")["fold"].nunique().max() == 1
    pairs = pd.read_csv(out / "comparisons.tsv", sep="\t")
    assert {("fusion_xattn", "mri_only"), ("shuffled_genetics", "mri_only"), ("fusion_xattn", "genetics_only")} <= set(zip(pairs["a"], pairs["b"], strict=True))
    assert pairs["delong_p"].between(0, 1).all()
    ranking = pd.read_csv(out / "attention_genetic_fusion_xattn.tsv", sep="\t")
    assert sorted(ranking["column"]) == ["apoe", "rs1", "rs2", "rs3", "site"]
    assert list(ranking["attention"]) == sorted(ranking["attention"], reverse=True)
    assert sorted(ranking["value_norm_rank"]) == [1, 2, 3, 4, 5] and abs(ranking["value_norm_share"].sum() - 1) < 1e-4
    assert {r["column"] for r in result["attention"]["shuffled_genetics"]} == set(ranking["column"])
    # the shuffled arm scored with the rows permuted as in its training: its predictions are the model's on other people's genes
    from alzmri.data.dataset import CachedVolumeDataset, select_scans
    from alzmri.data.genetics import GeneticEncoder, shuffled
    from alzmri.data.splits import read_split_dir
    from alzmri.evaluation.predict import load_classifier
    from alzmri.io.genetics import read_genetics
    from alzmri.preprocessing.cache import read_cache

    config = json.loads((out / "shuffled_genetics" / "fold-0" / "config.json").read_text())
    assert config["genetics"]["shuffled"] is True and config["model"] == "fusion_xattn"
    model, hp = load_classifier(out / "shuffled_genetics" / "fold-0" / "checkpoints" / "best-loss.ckpt")
    test = select_scans(read_cache(prepared["cache"])[0], read_split_dir(out / "folds" / "fold-0")["test"], "test")
    images = torch.stack([CachedVolumeDataset(test, hp["classes"])[i][0] for i in range(len(test))])
    encoder = GeneticEncoder.from_dict(hp["genetics"]["encoder"])
    scored = pooled["shuffled_genetics"].set_index(["participant_id", "session_id"]).loc[list(zip(test["participant_id"], test["session_id"], strict=True))]
    outputs = {}
    for name, rows in (("shuffled", shuffled(read_genetics(table), hp["genetics"]["seed"])), ("own", read_genetics(table))):
        features, present = encoder.transform(rows, list(test["participant_id"]))
        with torch.no_grad():
            outputs[name] = torch.softmax(model(images, torch.from_numpy(features), torch.from_numpy(present)), 1)[:, 1].numpy()
    assert np.allclose(outputs["shuffled"], scored[f"prob_{hp['classes'][1]}"], atol=1e-5)
    assert not np.allclose(outputs["own"], scored[f"prob_{hp['classes'][1]}"], atol=1e-5)


def test_explain_a_fusion_checkpoint_writes_attention(fusion_run: dict[str, Path], prepared: dict[str, Path]) -> None:
    from alzmri.explain.config import ExplainConfig
    from alzmri.explain.run import explain

    out = fusion_run["root"] / "explain"
    result = explain(ExplainConfig(run=fusion_run["run"], cache=prepared["cache"], split=prepared["split"], data="train", limit=4, gif=False, sanity=False, out=out))
    table = pd.read_csv(out / "explain.tsv", sep="\t")
    assert fusion_run["missing"] not in set(table["participant_id"])  # no genetic row: left out (trained with drop)
    assert len(table) == result["n_scans"] >= 2
    ranking = pd.read_csv(out / "attention_genetic.tsv", sep="\t")
    assert sorted(ranking["column"]) == ["apoe", "rs1", "rs2", "rs3", "site"]
    assert list(ranking["attention"]) == sorted(ranking["attention"], reverse=True) and ranking["rank"].tolist() == sorted(ranking["rank"])
    assert abs(ranking["value_norm_share"].sum() - 1) < 1e-4 and sorted(ranking["value_norm_rank"]) == [1, 2, 3, 4, 5]
    cells = pd.read_csv(out / "attention_cells.tsv", sep="\t")
    grid = result["attention"]["grid"]
    assert len(cells) == cells["class"].nunique() * 5 * int(np.prod(grid))
    for picture in ["attention_heatmap.png", *(f"{table['participant_id'][i]}_{table['session_id'][i]}/attention.png" for i in range(len(table)))]:
        assert (out / picture).stat().st_size > 1000


def test_predict_matches_rows_to_genetics_by_participant(fusion_run: dict[str, Path], prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.evaluation.config import PredictConfig
    from alzmri.evaluation.evaluate import PartlyPredicted, predict
    from alzmri.io.bids import load_scans

    scans = load_scans(prepared["bids"])
    keep = scans[scans["participant_id"].isin([fusion_run["missing"], _participants(prepared)[1]])]
    manifest = tmp_path / "m.tsv"
    keep.to_csv(manifest, sep="\t", index=False)
    with pytest.raises(PartlyPredicted, match="has no row in the genetic table") as caught:
        predict(PredictConfig(checkpoint=fusion_run["run"] / "checkpoints" / "best-loss.ckpt", inputs=[manifest], out=tmp_path / "p.tsv"))
    assert set(caught.value.table["participant_id"]) == {_participants(prepared)[1]}


def test_freeze_encoder_takes_an_image_runs_weights(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.evaluation.predict import load_classifier
    from alzmri.training.fit import fit

    image_run = fit(train_config(prepared, model="liu_cnn_compact", epochs=1, out=tmp_path / "runs", trackers=[]))
    table = _genetics(tmp_path / "g.tsv", _participants(prepared))
    fused = fit(train_config(prepared, model="fusion_concat", encoder="liu_cnn_compact", genetics=table, freeze_encoder=image_run / "checkpoints" / "last.ckpt",
                             epochs=2, out=tmp_path / "runs", trackers=[]))  # fmt: skip
    image, _ = load_classifier(image_run / "checkpoints" / "last.ckpt")
    fusion, _ = load_classifier(fused / "checkpoints" / "last.ckpt")
    theirs, ours = image.state_dict(), fusion.image.model.state_dict()
    weights = [k for k in ours if k.endswith("weight") and "num_batches" not in k]
    assert weights and all(torch.equal(ours[k], theirs[k]) for k in weights)  # loaded, then not trained
    from alzmri.io.checkpoint import read_checkpoint

    seen = read_checkpoint(fused / "checkpoints" / "last.ckpt")["hparams"]["training_data"]
    mine = read_checkpoint(image_run / "checkpoints" / "last.ckpt")["hparams"]["training_data"]
    assert len(seen["train"]["image_hash"]) == 2 * len(mine["train"]["image_hash"])  # the encoder's scans count as seen by the fusion model
    with pytest.raises(AlzmriError, match="is a liu_cnn_compact run; the fusion model's encoder is resnet10_3d"):
        fit(train_config(prepared, model="fusion_concat", encoder="resnet10_3d", genetics=table, freeze_encoder=image_run / "checkpoints" / "last.ckpt",
                         epochs=1, out=tmp_path / "runs", trackers=[]))  # fmt: skip
    assert len(list((tmp_path / "runs").glob("fusion_concat-*"))) == 1  # the refused start left no run folder


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("id\tapoe\nsub-001\te3/e4\n", "participant_id"),
        ("participant_id\tapoe\nsub-001\te3/e4\nsub-001\te4/e4\n", "duplicated"),
        ("participant_id\trs1\nsub-001\t1\nsub-002\tAG\n", "rs1"),
        ("participant_id\tapoe\trs1\nsub-001\te3/e4\t\nsub-002\te3/e3\tNA\n", "rs1"),
        ("participant_id\tapoe\nother-1\te3/e4\nother-2\te3/e3\n", "no participant of the images"),
    ],
    ids=["no participant_id", "duplicated id", "non-numeric dosage", "all-missing column", "no overlap"],
)
def test_bad_genetic_tables_are_one_line_cli_errors(prepared: dict[str, Path], tmp_path: Path, table: str, message: str) -> None:
    import subprocess
    import sys

    path = tmp_path / "genetics.tsv"
    path.write_text(table)
    before = path.read_bytes()
    done = subprocess.run([sys.executable, "-m", "alzmri", "train", str(prepared["cache"]), str(prepared["split"]), "--model", "fusion_xattn",
                           "--genetics", str(path), "--out", str(tmp_path / "runs"), "--trackers", ""], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert path.read_bytes() == before  # the user's table is never touched
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").glob("*/config.json"))  # no run folder left behind


def test_ablation_can_freeze_each_folds_mri_encoder(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.evaluation.config import FusionAblationConfig
    from alzmri.evaluation.fusion_ablation import ablate
    from alzmri.evaluation.predict import load_classifier

    table = _genetics(tmp_path / "g.tsv", _participants(prepared))
    out = tmp_path / "ablation"
    ablate(FusionAblationConfig(cache=prepared["cache"], genetics=table, out=out, folds=3, epochs=1, batch_size=4, encoder="liu_cnn_compact",
                                arms=["fusion_concat", "mri_only"], encoder_from_mri_only=True, progress=False, threads=1, trackers=[], bootstrap=200))  # fmt: skip
    assert (out / "ablation-frozen.tsv").is_file() and (out / "fusion_concat-frozen" / "oof_predictions.tsv").is_file()
    for k in range(3):  # each fold's fusion model holds that fold's MRI-only encoder, unchanged
        image, _ = load_classifier(out / "mri_only" / f"fold-{k}" / "checkpoints" / "best-loss.ckpt")
        fusion, _ = load_classifier(out / "fusion_concat-frozen" / f"fold-{k}" / "checkpoints" / "best-loss.ckpt")
        ours, theirs = fusion.image.model.state_dict(), image.state_dict()
        assert all(torch.equal(v, theirs[key]) for key, v in ours.items() if "num_batches" not in key)
    with pytest.raises(AlzmriError, match="keep mri_only"):
        ablate(FusionAblationConfig(cache=prepared["cache"], genetics=table, out=out, folds=3, arms=["fusion_concat"], encoder_from_mri_only=True))
