"""The near-duplicate slice audit: planted duplicates and shifted neighbouring slices are flagged, strangers are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter

from alzmri.data.slices.audit import audit, best_matches, calibrate, embed
from alzmri.data.slices.store import SliceSetConfig, save_slice, write_slice_cache


def subject_stack(seed: int, n: int = 8, size: int = 40) -> np.ndarray:
    """``n`` neighbouring 'slices' of one synthetic brain: a disc filled with a texture that changes slowly along z."""
    rng = np.random.default_rng(seed)
    field = gaussian_filter(rng.normal(size=(n * 2, size, size)), sigma=(6, 1, 1))
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    disc = (yy**2 + xx**2) < 0.7
    slices = field[::2] / field.std()
    return np.where(disc, slices, 0.0).astype(np.float32)


def write_cache(root: Path, images: dict[tuple[str, int], np.ndarray], known: bool = True) -> pd.DataFrame:
    rows = []
    for (subject, k), image in images.items():
        array = f"arrays/{subject}_{k}.npy"
        save_slice(root / array, image[None])
        rows.append({"participant_id": subject, "session_id": "s1", "slice_id": f"{subject}/{k}", "slice_index": str(k), "diagnosis": "CN",
                     "subject_known": known, "array": array})  # fmt: skip
    write_slice_cache(root, rows, SliceSetConfig(origin="images", size=40, channels=1, classes=["CN"], normalization="test"))
    from alzmri.data.slices.store import read_slice_cache

    return read_slice_cache(root)[0]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("calib")
    images = {(f"c{s}", k): image for s in range(8) for k, image in enumerate(subject_stack(100 + s))}
    return calibrate(write_cache(root, images), max_gap=2)


def test_calibration_separates_neighbours_from_strangers(calibrated) -> None:
    summary = calibrated.summary()
    assert summary["subjects"] == 8 and summary["same_person_pairs"] == 8 * (7 + 6)
    assert summary["same_person_median"] > calibrated.threshold > summary["strangers_median"]
    assert summary["same_person_flagged"] > 0.9 and summary["strangers_flagged"] <= 0.02


def test_audit_flags_duplicates_and_shifted_neighbours_not_strangers(calibrated, tmp_path: Path) -> None:
    train_images = {(f"t{s}", k): image for s in range(4) for k, image in enumerate(subject_stack(s)) if k % 2 == 0}
    train = write_cache(tmp_path / "train", train_images, known=False)
    planted = {("dup", k): train_images[("t1", k)] for k in (0, 4)}  # exact copies of training slices
    shifted = {("nbr", k): np.roll(subject_stack(2)[k], (1, -1), axis=(0, 1)) for k in (1, 3, 5)}  # odd neighbours, moved a pixel
    strangers = {(f"new{s}", k): image for s in range(3) for k, image in enumerate(subject_stack(50 + s)) if k < 4}
    test = write_cache(tmp_path / "test", planted | shifted | strangers, known=False)
    result = audit(train, test, calibrated.threshold)
    flagged = dict(zip(test["participant_id"] + "/" + test["slice_index"], result["flagged"], strict=True))
    assert all(flagged[f"dup/{k}"] for k in (0, 4)) and all(flagged[f"nbr/{k}"] for k in (1, 3, 5))
    assert not any(v for key, v in flagged.items() if key.startswith("new"))
    dup = result[result["participant_id"] == "dup"]
    assert list(dup["match_participant_id"]) == ["t1", "t1"] and (dup["ncc"] > 0.999).all()
    assert set(result.loc[result["participant_id"] == "nbr", "match_participant_id"]) == {"t2"}


def test_best_matches_respects_exclusions_and_shifts() -> None:
    rng = np.random.default_rng(0)
    images = gaussian_filter(rng.normal(size=(5, 24, 24)), sigma=(0, 2, 2)).astype(np.float32)
    moved = np.roll(images, 1, axis=2)
    score, index = best_matches(moved, images, shift=1)
    assert list(index) == list(range(5)) and (score > 0.85).all()  # (the rolled-in column differs)
    score0, _ = best_matches(moved, images, shift=0)
    assert (score0 <= score).all() and score0.mean() < score.mean() - 0.03
    exclude = np.eye(5, dtype=bool)
    _, index = best_matches(images, images, shift=0, exclude=exclude)
    assert (index != np.arange(5)).all()


def test_embed_reduces_by_area(tmp_path: Path) -> None:
    image = np.zeros((1, 64, 64), dtype=np.float32)
    image[0, :32] = 1.0
    np.save(tmp_path / "a.npy", image)
    small = embed([tmp_path / "a.npy"], size=8)
    assert small.shape == (1, 8, 8) and (small[0, :4] == 1).all() and (small[0, 4:] == 0).all()


def test_slice_audit_command_writes_table_summary_and_figures(tmp_path: Path) -> None:
    from alzmri.data.slices.audit_run import run_slice_audit
    from alzmri.data.slices.config import SliceAuditConfig

    images = {(f"c{s}", k): image for s in range(8) for k, image in enumerate(subject_stack(200 + s))}
    images |= {("dup", k): images[("c1", k)] for k in (0, 4)}  # a person filed twice, under another id
    cache = write_cache(tmp_path / "cache", images)
    split = tmp_path / "split"
    split.mkdir()
    scans = cache.drop_duplicates("participant_id")[["participant_id", "session_id", "diagnosis"]]
    for name, members in (("train", [f"c{s}" for s in range(6)]), ("val", ["c6"]), ("test", ["c7", "dup"])):
        scans[scans["participant_id"].isin(members)].to_csv(split / f"{name}.tsv", sep="\t", index=False)
    summary = run_slice_audit(SliceAuditConfig(cache=tmp_path / "cache", split=split, out=tmp_path / "audit"))
    table = pd.read_csv(tmp_path / "audit" / "audit.tsv", sep="\t")
    assert summary["test_slices"] == 10 and summary["flagged"] == 2 and summary["calibration"]["subjects"] == 9
    assert set(table.loc[table["flagged"], "participant_id"]) == {"dup"} and set(table.loc[table["flagged"], "match_participant_id"]) == {"c1"}
    assert all((tmp_path / "audit" / f).is_file() for f in ("summary.json", "ncc.png", "pairs.png"))
