"""2D slices: image reading, import from class folders and manifests, class order, slices cut from 3D, splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from alzmri.data.slices.classes import cdr, map_label, ordered_classes, parse_label_map
from alzmri.data.slices.config import ImportSlicesConfig, SlicesConfig
from alzmri.data.slices.from_images import import_slices, prepare_image
from alzmri.data.slices.from_volumes import cut, slice_indices, slice_stack, slices_from_volumes
from alzmri.data.slices.store import read_slice_cache
from alzmri.io.images import read_image
from alzmri.utils.errors import AlzmriError

OASIS = ("NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented")


def disc(size: tuple[int, int] = (40, 36), radius: float = 0.6, hole: float = 0.2, seed: int = 0) -> np.ndarray:
    """A bright disc 'brain' with a dark 'ventricle' of relative radius ``hole``, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size[0]), np.linspace(-1, 1, size[1]), indexing="ij")
    r = np.sqrt(yy**2 + xx**2)
    image = np.where(r < radius, 0.8, 0.0)
    image[r < hole] = 0.3
    return np.clip(image + rng.normal(0, 0.02, size) * (r < radius), 0, 1)


def save_png(path: Path, image: np.ndarray, bits: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scale = 255 if bits == 8 else 65535
    Image.fromarray((image * scale).astype(np.uint8 if bits == 8 else np.uint16)).save(path)
    return path


def class_folders(root: Path, classes=("NonDemented", "MildDemented"), subjects: int = 3, slices: int = 3, size=(40, 36)) -> Path:
    """``root/<class>/OAS1_<s>_MR1_<k>.png``: OASIS-style names, larger 'ventricles' in later stages."""
    n = 0
    for c, name in enumerate(classes):
        for s in range(subjects):
            n += 1
            for k in range(slices):
                save_png(root / name / f"OAS1_{n:04d}_MR1_{100 + k}.png", disc(size, hole=0.15 + 0.15 * c, seed=n * 10 + k))
    return root


def test_read_image_depths_and_colour(tmp_path: Path) -> None:
    image = disc()
    a, notes8 = read_image(save_png(tmp_path / "a.png", image))
    b, _ = read_image(save_png(tmp_path / "b.png", image, bits=16))
    Image.fromarray((image * 65535).astype(np.uint16)).save(tmp_path / "c.tif")
    c, _ = read_image(tmp_path / "c.tif")
    assert a.shape == b.shape == c.shape == image.shape and notes8 == []
    assert np.abs(a - image).max() <= 1 / 255 and np.abs(b - image).max() < 1e-4 and np.abs(c - b).max() < 1e-6
    gray_rgb = np.repeat((image * 255).astype(np.uint8)[..., None], 3, axis=-1)
    Image.fromarray(gray_rgb).save(tmp_path / "g.png")
    g, notes = read_image(tmp_path / "g.png")
    assert notes == [] and np.abs(g - a).max() < 1e-2
    colour = gray_rgb.copy()
    colour[..., 0] = 255
    Image.fromarray(colour).save(tmp_path / "col.png")
    assert read_image(tmp_path / "col.png")[1] == ["colour image converted to gray"]


def test_read_image_refuses_corrupt_and_non_images(tmp_path: Path) -> None:
    good = save_png(tmp_path / "a.png", disc())
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:80])
    (tmp_path / "notes.jpg").write_text("not an image")
    for name, words in (("cut.png", "cannot read image"), ("notes.jpg", "cannot read image"), ("missing.png", "does not exist")):
        with pytest.raises(AlzmriError, match=words) as info:
            read_image(tmp_path / name)
        assert "\n" not in str(info.value)


def test_class_order_label_maps_and_cdr() -> None:
    assert ordered_classes(["ModerateDemented", "NonDemented", "MildDemented", "VeryMildDemented"]) == list(OASIS)
    assert ordered_classes(["Mild_Demented", "Non_Demented"]) == ["Non_Demented", "Mild_Demented"]
    assert [cdr(c) for c in OASIS] == [0.0, 0.5, 1.0, 2.0]
    assert ordered_classes(["AD", "CN", "MCI"]) == ["CN", "MCI", "AD"]
    label_map = parse_label_map("healthy=Control, sick=Patient")
    assert [map_label(f, label_map, "x") for f in ("sick", "healthy")] == ["Patient", "Control"]
    assert ordered_classes(["Patient", "Control"], label_map) == ["Control", "Patient"]  # the label map's order
    with pytest.raises(AlzmriError, match="not a known stage.*--label-map"):
        map_label("group_b", {}, "folder x")
    with pytest.raises(AlzmriError, match="FOLDER=CLASS"):
        parse_label_map("a=X,b")
    with pytest.raises(AlzmriError, match="mix OASIS stages"):
        ordered_classes(["MildDemented", "AD"])


def test_import_class_folders_with_oasis_names(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "in", classes=("MildDemented", "NonDemented"))
    result = import_slices(ImportSlicesConfig(source=root, out=tmp_path / "out", names="oasis", size=32, progress=False))
    table, config = read_slice_cache(tmp_path / "out")
    assert config.classes == ["NonDemented", "MildDemented"] and result["classes"] == config.classes  # CDR order, not folder order
    assert len(table) == 18 and table["subject_known"].all() and table["participant_id"].nunique() == 6
    assert set(table["session_id"]) == {"MR1"} and sorted(set(table["slice_index"])) == ["100", "101", "102"]
    first = np.load(table["array"].iloc[0])
    assert first.shape == (1, 32, 32) and first.dtype == np.float16
    brain = first[0] != 0
    assert abs(float(first[0][brain].astype(float).mean())) < 0.05 and abs(float(first[0][brain].astype(float).std()) - 1) < 0.05
    assert (first[0][0] == 0).all()  # background stays 0
    before = {p: Path(p).stat().st_mtime_ns for p in table["array"]}
    import_slices(ImportSlicesConfig(source=root, out=tmp_path / "out", names="oasis", size=32, progress=False))
    assert {p: Path(p).stat().st_mtime_ns for p in read_slice_cache(tmp_path / "out")[0]["array"]} == before  # resumed, not redone


def test_import_without_names_marks_subjects_unknown(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "in", subjects=2, slices=2)
    result = import_slices(ImportSlicesConfig(source=root, out=tmp_path / "out", size=24, progress=False))
    table, _ = read_slice_cache(tmp_path / "out")
    assert not table["subject_known"].any() and table["participant_id"].nunique() == len(table) == 8
    assert all(p.startswith("unknown:") for p in table["participant_id"])
    assert any("no subject id" in w for w in result["warnings"])


def test_import_refuses_bad_folders(tmp_path: Path) -> None:
    def refused(root: Path, words: str, **kw) -> None:
        with pytest.raises(AlzmriError, match=words) as info:
            import_slices(ImportSlicesConfig(source=root, out=tmp_path / f"out-{root.name}", size=24, progress=False, **kw))
        assert "\n" not in str(info.value)

    unknown = class_folders(tmp_path / "unknown", classes=("group_a", "group_b"), subjects=1, slices=1)
    refused(unknown, "group_a.*--label-map")
    import_slices(ImportSlicesConfig(source=unknown, out=tmp_path / "mapped", size=24, progress=False, label_map="group_a=CN,group_b=AD"))
    assert read_slice_cache(tmp_path / "mapped")[1].classes == ["CN", "AD"]
    empty = class_folders(tmp_path / "empty", subjects=1, slices=1)
    (empty / "ModerateDemented").mkdir()
    refused(empty, "class folder .*ModerateDemented is empty")
    text = class_folders(tmp_path / "text", subjects=1, slices=1)
    (text / "NonDemented" / "readme.txt").write_text("notes")
    refused(text, "readme.txt is not an image")
    corrupt = class_folders(tmp_path / "corrupt", subjects=1, slices=1)
    (corrupt / "NonDemented" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    refused(corrupt, "cannot read image .*broken.png")
    loose = class_folders(tmp_path / "loose", subjects=1, slices=1)
    save_png(loose / "stray.png", disc())
    refused(loose, "outside class folders")
    refused(class_folders(tmp_path / "nomatch", subjects=1, slices=1), "matches none", names="slice_set")


def test_mixed_sizes_are_resized_with_a_warning(tmp_path: Path) -> None:
    root = class_folders(tmp_path / "in", subjects=2, slices=2, size=(40, 36))
    save_png(root / "NonDemented" / "OAS1_0099_MR1_100.png", disc((64, 50)))
    result = import_slices(ImportSlicesConfig(source=root, out=tmp_path / "out", names="oasis", size=24, progress=False))
    assert any("1 of 9 images are not 40x36" in w and "resized to 24x24" in w for w in result["warnings"])
    assert {np.load(p).shape for p in read_slice_cache(tmp_path / "out")[0]["array"]} == {(1, 24, 24)}


def test_given_split_folders_are_kept_and_val_carved_by_subject(tmp_path: Path) -> None:
    from alzmri.data.splits import read_split_dir

    class_folders(tmp_path / "in" / "train", subjects=5, slices=2)
    class_folders(tmp_path / "in" / "test", subjects=1, slices=2)
    # test subjects must differ from train ones: renumber them
    for path in sorted((tmp_path / "in" / "test").rglob("*.png")):
        path.rename(path.with_name(path.name.replace("OAS1_0", "OAS1_9")))
    import_slices(ImportSlicesConfig(source=tmp_path / "in", out=tmp_path / "out", names="oasis", size=24, val_fraction=0.2, progress=False))
    splits = read_split_dir(tmp_path / "out" / "split")
    subjects = {name: set(part["participant_id"]) for name, part in splits.items()}
    assert len(subjects["test"]) == 2 and len(subjects["val"]) == 2 and len(subjects["train"]) == 8
    assert not (subjects["train"] & subjects["val"]) and not (subjects["train"] & subjects["test"])


def test_manifest_import(tmp_path: Path) -> None:
    rows = []
    for i, dx in enumerate(["CN", "CN", "AD", "AD"]):
        save_png(tmp_path / "img" / f"{i}.png", disc(hole=0.2 + 0.2 * (dx == "AD"), seed=i))
        rows.append({"participant_id": f"s{i // 2 + 10 * (dx == 'AD')}", "session_id": "a", "slice_index": str(i), "diagnosis": dx, "path": f"img/{i}.png"})
    pd.DataFrame(rows).to_csv(tmp_path / "m.tsv", sep="\t", index=False)
    import_slices(ImportSlicesConfig(source=tmp_path / "m.tsv", out=tmp_path / "out", size=24, progress=False))
    table, config = read_slice_cache(tmp_path / "out")
    assert config.classes == ["CN", "AD"] and table["subject_known"].all() and list(table["slice_index"]) == ["0", "1", "2", "3"]


def test_prepare_image_pads_square_and_zscores_foreground() -> None:
    image = np.zeros((20, 10), dtype=np.float32)
    image[5:15, 2:8] = np.linspace(0.3, 0.9, 60).reshape(10, 6)
    out = prepare_image(image, 20)
    assert out.shape == (1, 20, 20)
    assert (out[0, :, :5] == 0).all() and (out[0, :, 15:] == 0).all()  # padded left and right with background
    brain = out[0] != 0
    assert abs(out[0][brain].mean()) < 1e-5 and abs(out[0][brain].std() - 1) < 1e-4


def test_cut_orientation_and_context() -> None:
    volume = np.zeros((10, 12, 14), dtype=np.float32)  # RAS: x (left→right), y (posterior→anterior), z (inferior→superior)
    volume[8, 10, 5] = 1.0  # right, anterior, low
    axial = cut(volume, "axial", 5)
    assert axial.shape == (12, 10)
    row, col = np.argwhere(axial == 1)[0]
    assert row == 12 - 1 - 10 and col == 8  # anterior at the top; x across the width
    coronal = cut(volume, "coronal", 10)
    assert coronal.shape == (14, 10) and tuple(np.argwhere(coronal == 1)[0]) == (14 - 1 - 5, 8)  # superior at the top
    volume[:, :, 4] = 2.0
    volume[:, :, 6] = 3.0
    stack = slice_stack(volume, "axial", 5, context=1, size=None)
    assert stack.shape == (3, 12, 10) and stack[0].max() == 2 and stack[2].max() == 3 and stack[1].max() == 1
    assert slice_stack(volume, "axial", 5, context=0, size=20).shape == (1, 20, 20)


def test_slice_indices_follow_the_brain() -> None:
    volume = np.zeros((16, 16, 30), dtype=np.float32)
    volume[4:12, 4:12, 18:26] = 1.0  # brain high in the volume: centre of mass z = 21.5
    assert slice_indices(volume, None, "axial", 3, 2, 0) == [20, 22, 24]
    assert slice_indices(volume, None, "axial", 5, 6, 1) == [4, 10, 16, 22, 28]  # kept inside with room for context
    with pytest.raises(AlzmriError, match="do not fit"):
        slice_indices(volume, None, "axial", 10, 4, 0)


def test_a_subjects_registered_visits_are_cut_at_the_same_slices(tmp_path: Path) -> None:
    """The brain's centre of mass moves a voxel between two visits (it shrank): both visits still get the same indices."""
    from alzmri.data.slices.from_volumes import subject_centres

    paths = []
    for name, (low, high), shape in (("a1", (10, 20), (16, 16, 30)), ("a2", (11, 20), (16, 16, 30)), ("b1", (4, 10), (16, 16, 20))):
        volume = np.zeros(shape, dtype=np.float32)
        volume[4:12, 4:12, low:high] = 1.0
        np.save(tmp_path / f"{name}.npy", volume)
        paths.append(str(tmp_path / f"{name}.npy"))
    scans = pd.DataFrame({"participant_id": ["sub-a", "sub-a", "sub-b"], "array": paths})
    volumes = [np.load(p) for p in paths]
    alone = [slice_indices(v, None, "axial", 3, 2, 0) for v in volumes]
    assert alone[0] != alone[1]  # each visit's own centre (14.5 vs 15.0) rounds to other slices
    shared = subject_centres(scans, lambda scan, volume: None, "axial")
    assert shared[0] == shared[1] == pytest.approx(14.75) and 2 not in shared  # sub-b has one scan: its own centre
    together = [slice_indices(v, None, "axial", 3, 2, 0, shared.get(i)) for i, v in enumerate(volumes)]
    assert together[0] == together[1] and together[2] == alone[2]


def test_slices_name_their_volume_wherever_they_are_read(prepared: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cache named relative to the working folder: the slices' source volumes stay findable from any other folder."""
    monkeypatch.chdir(prepared["cache"].parent)
    slices_from_volumes(SlicesConfig(cache=Path(prepared["cache"].name), out=tmp_path / "rel", n=1, progress=False))
    monkeypatch.chdir(tmp_path)
    table, _ = read_slice_cache(tmp_path / "rel")
    assert all(Path(s).is_absolute() and Path(s).is_file() for s in table["source"])


def test_slices_from_cache_and_subject_level_split(prepared: dict[str, Path], tmp_path: Path) -> None:
    from alzmri.cli.commands.split import run_split
    from alzmri.data.config import SplitConfig
    from alzmri.data.dataset import CachedVolumeDataset, select_scans
    from alzmri.data.splits import read_split_dir, split_level
    from alzmri.preprocessing.cache import read_cache

    volumes, _ = read_cache(prepared["cache"])
    slices_from_volumes(SlicesConfig(cache=prepared["cache"], out=tmp_path / "s25", n=3, step=2, context=1, progress=False))
    table, config = read_slice_cache(tmp_path / "s25")
    assert len(table) == 3 * len(volumes) and config.channels == 3 and config.size == 16 and config.origin == "volumes"
    assert config.preprocess["size"] == 16
    run_split(SplitConfig(source=tmp_path / "s25", out=tmp_path / "split", ratios=(0.5, 0.25, 0.25)))
    splits = read_split_dir(tmp_path / "split")
    assert split_level(tmp_path / "split") == "subject"
    chosen = {name: select_scans(table, splits[name], name) for name in splits}
    assert sum(len(part) for part in chosen.values()) == len(table)
    subjects = {name: set(part["participant_id"]) for name, part in chosen.items()}
    assert not (subjects["train"] & subjects["test"]) and not (subjects["train"] & subjects["val"]) and not (subjects["val"] & subjects["test"])
    x, label = CachedVolumeDataset(chosen["train"], config.classes)[0]
    assert tuple(x.shape) == (3, 16, 16) and label in (0, 1)
    # a slice-level split (to show leakage) deals slices, keeps the true subject ids, and is marked
    run_split(SplitConfig(source=tmp_path / "s25", out=tmp_path / "leaky", ratios=(0.5, 0.25, 0.25), level="slice"))
    leaky = read_split_dir(tmp_path / "leaky")
    assert split_level(tmp_path / "leaky") == "slice" and "slice_id" in leaky["train"].columns
    assert set(leaky["train"]["participant_id"]) & set(leaky["test"]["participant_id"])
    assert sum(len(select_scans(table, leaky[n], n)) for n in leaky) == len(table)


def test_cli_import_errors_are_one_line_and_leave_input_untouched(tmp_path: Path) -> None:
    import hashlib
    import subprocess
    import sys

    root = class_folders(tmp_path / "in", classes=("NonDemented", "odd_folder"), subjects=1, slices=1)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    done = subprocess.run([sys.executable, "-m", "alzmri", "import-slices", str(root), str(tmp_path / "out"), "--no-progress"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "odd_folder" in done.stderr and "--label-map" in done.stderr and "Traceback" not in done.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()} == before
    ok = subprocess.run([sys.executable, "-m", "alzmri", "import-slices", str(root), str(tmp_path / "out"), "--no-progress", "--size", "24",
                         "--label-map", "NonDemented=CN,odd_folder=AD", "--names", "oasis"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "2 slices (CN 1, AD 1) of 24x24" in ok.stdout and "subject known for 2 of them" in ok.stdout


def test_eda_page(tmp_path: Path) -> None:
    from alzmri.data.slices.eda import run_eda

    root = class_folders(tmp_path / "in", classes=("VeryMildDemented", "NonDemented", "MildDemented"), subjects=2, slices=2)
    import_slices(ImportSlicesConfig(source=root, out=tmp_path / "cache", names="oasis", size=32, progress=False))
    summary = run_eda(tmp_path / "cache", tmp_path / "eda")
    assert summary["classes"] == ["NonDemented", "VeryMildDemented", "MildDemented"]
    assert [r["pair"] for r in summary["adjacent_stages"]] == ["NonDemented → VeryMildDemented", "VeryMildDemented → MildDemented"]
    assert all(0 < r["ssim"] < 1 and r["mean_abs_difference"] > 0 for r in summary["adjacent_stages"])
    assert summary["counts"]["MildDemented"] == {"slices": 4, "subjects": 2}
    page = (tmp_path / "eda" / "eda.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "<script" not in page


def test_slices_centred_on_the_hippocampus_of_registered_scans(prepared: dict[str, Path], tmp_path: Path) -> None:
    """A cache marked as MNI-registered, its grid 12 mm voxels over MNI space: axial slices go to the hippocampi's level."""
    import json
    import shutil

    from alzmri.preprocessing.cache import CONFIG_FILE, read_cache
    from alzmri.preprocessing.pipeline import OUTPUT_AFFINE

    cache = tmp_path / "cache"
    shutil.copytree(prepared["cache"], cache)
    with pytest.raises(AlzmriError, match="needs scans registered to MNI152"):
        slices_from_volumes(SlicesConfig(cache=cache, out=tmp_path / "no", n=1, structure="Hippocampus", progress=False))
    settings = json.loads((cache / CONFIG_FILE).read_text())
    settings["steps"] = [*settings["steps"][:-3], "register", *settings["steps"][-3:]]
    (cache / CONFIG_FILE).write_text(json.dumps(settings))
    affine = np.diag([12.0, 12.0, 12.0, 1.0])
    affine[:3, 3] = (-96.0, -132.0, -78.0)  # voxel (0, 0, 0) at that MNI position
    for record in (cache / "qc").glob("*.json"):
        data = json.loads(record.read_text())
        data[OUTPUT_AFFINE] = " ".join(f"{v:g}" for v in affine.ravel())
        record.write_text(json.dumps(data))
    assert "register" in read_cache(cache)[1].steps
    slices_from_volumes(SlicesConfig(cache=cache, out=tmp_path / "hippo", n=1, structure="Hippocampus", progress=False))
    slices_from_volumes(SlicesConfig(cache=cache, out=tmp_path / "brain", n=1, progress=False))
    hippo, config = read_slice_cache(tmp_path / "hippo")
    # the hippocampi lie at MNI z ≈ -30..0 mm: grid index (z + 78) / 12 ≈ 4..6
    assert set(hippo["slice_index"]) <= {"4", "5", "6"} and config.selection.startswith("around Hippocampus")
    assert set(read_slice_cache(tmp_path / "brain")[0]["slice_index"]) != set(hippo["slice_index"])
    # the atlas cut like the slices: the hippocampus slice holds hippocampus labels, and volumes get the atlas on their grid
    from alzmri.data.slices.atlas import REGION_GROUPS, atlas_labels, region_masks

    labels = atlas_labels(hippo, config, tmp_path / "hippo", (1, config.size, config.size))
    assert labels.shape == (len(hippo), config.size, config.size) and region_masks(labels, dilate=0)["hippocampus_amygdala"].any()
    volumes, preprocess = read_cache(cache)
    on_grid = atlas_labels(volumes.iloc[:1], preprocess, cache, (1, 16, 16, 16))
    assert on_grid.shape == (1, 16, 16, 16) and np.isin(on_grid, REGION_GROUPS["ventricles"]).any()
    assert atlas_labels(volumes.iloc[:1], read_cache(prepared["cache"])[1], prepared["cache"], (1, 16, 16, 16)) is None  # not registered
    with pytest.raises(AlzmriError, match="no Desikan-Killiany structure named 'Hipocampus'"):
        slices_from_volumes(SlicesConfig(cache=cache, out=tmp_path / "typo", n=1, structure="Hipocampus", progress=False))


def test_given_split_keeps_each_slice_where_its_folder_put_it(tmp_path: Path) -> None:
    """A subject with images in train/ and test/: its slices stay where they are, and the split is marked slice-level."""
    from alzmri.data.dataset import select_scans
    from alzmri.data.splits import read_split_dir, split_level

    class_folders(tmp_path / "in" / "train", subjects=3, slices=2)
    class_folders(tmp_path / "in" / "test", subjects=1, slices=1)  # OAS1_0001 and OAS1_0002 again: in both folders
    import_slices(ImportSlicesConfig(source=tmp_path / "in", out=tmp_path / "out", names="oasis", size=24, val_fraction=0.0, progress=False))
    table, _ = read_slice_cache(tmp_path / "out")
    splits = read_split_dir(tmp_path / "out" / "split")
    chosen = {name: select_scans(table, part, name) for name, part in splits.items()}
    assert {name: len(part) for name, part in chosen.items()} == {"train": 12, "val": 0, "test": 2}
    assert set(chosen["test"]["given_split"]) == {"test"} and set(chosen["train"]["given_split"]) == {"train"}
    assert split_level(tmp_path / "out" / "split") == "slice"


def test_alpha_and_low_range_16_bit_images(tmp_path: Path) -> None:
    image = disc()
    rgba = np.zeros((*image.shape, 4), dtype=np.uint8)
    rgba[..., :3] = np.where(image[..., None] > 0, (image[..., None] * 255).astype(np.uint8), 255)  # white where transparent
    rgba[..., 3] = np.where(image > 0, 255, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    values, notes = read_image(tmp_path / "a.png")
    assert values[0, 0] == 0 and notes == ["transparent pixels composited over black"]
    low = (image * 800).astype(np.uint16)  # a 16-bit export that uses values up to 800 only
    Image.fromarray(low).save(tmp_path / "low.png")
    prepared8 = prepare_image(read_image(save_png(tmp_path / "b.png", image))[0], 32)
    prepared16 = prepare_image(read_image(tmp_path / "low.png")[0], 32)
    assert (prepared16[0, 0] == 0).all() and np.abs(prepared16 - prepared8).max() < 0.1
