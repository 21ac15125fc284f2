"""alzmri convert: DICOM series written with pydicom → NIfTI with the right geometry and values."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from typer.testing import CliRunner

from alzmri.cli.main import app
from alzmri.io.dicom import convert_dicom_dir, read_dicom_series
from alzmri.io.manifest import read_manifest
from alzmri.utils.errors import AlzmriError

SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)  # rows run anterior→posterior, columns superior→inferior
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
SLOPE, INTERCEPT = 2.0, -100.0


def write_series(
    folder: Path,
    n: int,
    *,
    rows: int = 20,
    cols: int = 24,
    iop: tuple[float, ...] = SAGITTAL,
    origin: tuple[float, float, float] = (40.0, -60.0, 70.0),
    pixel_spacing: tuple[float, float] = (0.9, 1.1),
    gap: float = 1.2,
    description: str = "MPRAGE",
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "M", "ND"),
    patient: str = "P-001",
    study: tuple[str, str] | None = None,
    series_number: int = 2,
    seed: int = 0,
    nested: bool = False,
    mutate=None,
) -> dict:
    """Write one series in shuffled order under random names; return its geometry and pixels.

    ``mutate(k, ds)`` may change slice ``k`` (index along the slice normal) before it is saved.
    """
    rng = np.random.default_rng(seed)
    study_uid, study_date = study or (generate_uid(), "20240101")
    series_uid = generate_uid()
    row_dir, col_dir = np.array(iop[:3]), np.array(iop[3:])
    normal = np.cross(row_dir, col_dir)
    pixels = rng.integers(0, 3000, size=(n, rows, cols), dtype=np.int16)
    for k in rng.permutation(n):
        ds = Dataset()
        sop_uid = generate_uid()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientSex, ds.PatientAge = patient, "F", "071Y"
        ds.StudyDate, ds.StudyTime, ds.Modality = study_date, "101500", "MR"
        ds.SeriesDescription, ds.SeriesNumber = description, series_number
        ds.ImageType = list(image_type)
        ds.Manufacturer, ds.MagneticFieldStrength = "ACME", 3.0
        ds.RepetitionTime, ds.EchoTime, ds.InversionTime, ds.FlipAngle = 2300.0, 2.98, 900.0, 9.0
        ds.InstanceNumber = n - int(k)  # reversed: the converter must sort by position, not by number
        ds.ImagePositionPatient = [float(v) for v in np.array(origin) + k * gap * normal]
        ds.ImageOrientationPatient = list(iop)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = gap
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.RescaleSlope, ds.RescaleIntercept = SLOPE, INTERCEPT
        ds.PixelData = pixels[k].tobytes()
        if mutate:
            mutate(int(k), ds)
        sub = folder / f"d{rng.integers(3)}" / f"e{rng.integers(2)}" if nested else folder
        sub.mkdir(parents=True, exist_ok=True)
        ds.save_as(sub / hashlib.sha1(sop_uid.encode()).hexdigest()[:12], enforce_file_format=True)  # random, no .dcm
    return {"uid": series_uid, "pixels": pixels, "origin": np.array(origin), "normal": normal, "row": row_dir, "col": col_dir}


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def lps_to_ras(p: np.ndarray) -> np.ndarray:
    return np.array([-p[0], -p[1], p[2]])


def test_sagittal_series_geometry_and_values(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    s = write_series(dicom, 100, nested=True, seed=1)
    (dicom / "README.txt").write_text("not DICOM")
    table = convert_dicom_dir(dicom, out, progress=False)
    assert table["status"].tolist() == ["converted"] and table.attrs["ignored_files"] == 1
    path = out / table["path"].iloc[0]
    assert path == out / "sub-P001/ses-20240101/anat/sub-P001_ses-20240101_run-01_T1w.nii.gz"

    img = nib.load(path)
    assert img.shape == (24, 20, 100)  # (columns, rows, slices)
    np.testing.assert_allclose(img.header.get_zooms(), (1.1, 0.9, 1.2), atol=1e-5)
    # Row direction +y (LPS posterior), column direction -z (inferior), normal row×col = -x (LPS) = +x (RAS).
    assert nib.aff2axcodes(img.affine) == ("P", "I", "R")
    first = s["origin"]
    last = first + 23 * 1.1 * s["row"] + 19 * 0.9 * s["col"] + 99 * 1.2 * s["normal"]
    np.testing.assert_allclose(img.affine @ [0, 0, 0, 1], [*lps_to_ras(first), 1], atol=1e-4)
    np.testing.assert_allclose(img.affine @ [23, 19, 99, 1], [*lps_to_ras(last), 1], atol=1e-4)

    data = np.asarray(img.dataobj)
    for i, j, k in [(0, 0, 0), (23, 19, 99), (5, 7, 42), (17, 2, 63)]:
        assert data[i, j, k] == pytest.approx(s["pixels"][k, j, i] * SLOPE + INTERCEPT)

    sidecar = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
    assert sidecar["SeriesInstanceUID"] == s["uid"] and sidecar["NumberOfSlices"] == 100
    assert sidecar["PixelSpacing"] == [0.9, 1.1] and sidecar["EchoTime"] == 2.98 and sidecar["PatientAge"] == "071Y"
    assert len(sidecar["SourceFolders"]) > 1  # the series spans sub-folders


def test_localizer_and_short_series_are_skipped(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    study = (generate_uid(), "20230505")
    main = write_series(dicom, 12, study=study, series_number=3, iop=AXIAL)
    loc = write_series(dicom, 3, study=study, series_number=1, description="AAHead_Scout", image_type=("ORIGINAL", "PRIMARY", "M", "LOCALIZER"))
    short = write_series(dicom, 5, study=study, series_number=2, description="t2_tse")
    table = convert_dicom_dir(dicom, tmp_path / "out", progress=False).set_index("series_uid")
    assert len(table) == 3
    assert table.loc[main["uid"], "status"] == "converted"
    assert table.loc[loc["uid"], ["status", "reason"]].tolist() == ["skipped", "localizer/scout"]
    assert table.loc[short["uid"], "status"] == "skipped" and "too few slices" in table.loc[short["uid"], "reason"]
    # The run counts only converted series, so the main series is run 01.
    assert table.loc[main["uid"], "path"].endswith("ses-20230505_run-01_T1w.nii.gz")
    written = pd.read_csv(tmp_path / "out" / "conversion.tsv", sep="\t")
    assert set(written["series_uid"]) == set(table.index)


def bad_size(k: int, ds: Dataset) -> None:
    if k == 4:
        ds.Rows, ds.Columns = 10, 10
        ds.PixelData = np.zeros((10, 10), np.int16).tobytes()


def duplicate_position(k: int, ds: Dataset) -> None:
    if k == 4:  # a second echo at slice 3's position
        ds.ImagePositionPatient = [40.0, -60.0, 70.0 + 3 * 1.2]


def missing_slice(k: int, ds: Dataset) -> None:
    if k >= 6:
        ds.ImagePositionPatient = [40.0, -60.0, 70.0 + (k + 1) * 1.2]


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [(bad_size, "differing image sizes"), (duplicate_position, "share a position"), (missing_slice, "non-uniform slice spacing")],
)
def test_inconsistent_series_is_reported_not_raised(tmp_path: Path, mutate, expected: str) -> None:
    dicom = tmp_path / "dicom"
    good = write_series(dicom, 10, iop=AXIAL, series_number=1)
    bad = write_series(dicom, 12, iop=AXIAL, series_number=2, mutate=mutate)
    table = convert_dicom_dir(dicom, tmp_path / "out", progress=False).set_index("series_uid")
    assert table.loc[good["uid"], "status"] == "converted"
    assert table.loc[bad["uid"], "status"] == "failed"
    assert expected in table.loc[bad["uid"], "reason"]


def test_no_dicom_raises_and_cli_prints_one_line(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    dicom.mkdir()
    (dicom / "notes.txt").write_text("no images here\n")
    with pytest.raises(AlzmriError, match="no DICOM image series"):
        convert_dicom_dir(dicom, tmp_path / "out", progress=False)
    result = CliRunner().invoke(app, ["convert", str(dicom), str(tmp_path / "out2"), "--no-progress"])
    assert result.exit_code != 0
    err = result.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert "Traceback" not in result.output
    assert not (tmp_path / "out2").exists()


def test_only_localizers_raises_after_writing_the_table(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    write_series(dicom, 3, description="localizer", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    with pytest.raises(AlzmriError, match="1 skipped"):
        convert_dicom_dir(dicom, out, progress=False)
    assert pd.read_csv(out / "conversion.tsv", sep="\t")["reason"].tolist() == ["localizer/scout"]


def test_rerun_resumes_and_never_touches_the_input(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    write_series(dicom, 10, iop=AXIAL, nested=True)
    before = snapshot(dicom)
    first = convert_dicom_dir(dicom, out, progress=False)
    nifti = out / first["path"].iloc[0]
    mtime = nifti.stat().st_mtime_ns
    result = CliRunner().invoke(app, ["convert", str(dicom), str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "converted 1 series (1 already present)" in result.stdout
    assert nifti.stat().st_mtime_ns == mtime
    assert pd.read_csv(out / "conversion.tsv", sep="\t")["reason"].tolist() == ["already converted"]
    assert snapshot(dicom) == before
    with pytest.raises(AlzmriError, match="inside the DICOM folder"):
        convert_dicom_dir(dicom, dicom / "out", progress=False)


def test_manifest_is_accepted_once_diagnoses_are_filled_in(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    study = (generate_uid(), "20220202")
    small = write_series(dicom, 10, iop=AXIAL, study=study, series_number=1)
    big = write_series(dicom, 14, iop=AXIAL, study=study, series_number=2)  # same session, more slices
    other = write_series(dicom, 10, iop=AXIAL, patient="P 002", series_number=1)
    table = convert_dicom_dir(dicom, out, progress=False)
    assert (table["status"] == "converted").all() and len(table) == 3

    manifest = pd.read_csv(out / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert manifest["participant_id"].tolist() == ["sub-P001", "sub-P002"]
    uid_of = dict(zip(table["path"], table["series_uid"], strict=True))
    assert uid_of[manifest["path"].iloc[0]] == big["uid"] and uid_of[manifest["path"].iloc[1]] == other["uid"]
    assert small["uid"] in set(table["series_uid"])
    assert (manifest["diagnosis"] == "").all()  # DICOM has no diagnosis: read_manifest refuses until filled in
    with pytest.raises(AlzmriError, match="empty diagnosis"):
        read_manifest(out / "manifest.tsv")

    manifest["diagnosis"] = ["CN", "AD"]
    manifest.to_csv(out / "manifest.tsv", sep="\t", index=False)
    scans = read_manifest(out / "manifest.tsv")
    assert [Path(p) for p in scans["path"]] == [(out / p).resolve() for p in manifest["path"]]
    assert scans["age"].tolist() == [71.0, 71.0] and scans["sex"].tolist() == ["F", "F"]


def test_read_dicom_series_matches_the_converted_file(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    s = write_series(dicom, 12, nested=True, seed=3)
    before = snapshot(dicom)
    img, meta = read_dicom_series(dicom)
    assert snapshot(dicom) == before and not out.exists()  # nothing written
    assert meta == {"SeriesInstanceUID": s["uid"], "SeriesDescription": "MPRAGE", "n_slices": 12, "warning": ""}

    table = convert_dicom_dir(dicom, out, progress=False)
    written = nib.load(out / table["path"].iloc[0])
    assert img.shape == written.shape == (24, 20, 12)
    assert nib.aff2axcodes(img.affine) == ("P", "I", "R")
    np.testing.assert_allclose(img.affine, written.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(img.dataobj), np.asarray(written.dataobj))
    assert np.asarray(img.dataobj).dtype == np.asarray(written.dataobj).dtype
    assert int(img.header["sform_code"]) == int(written.header["sform_code"])
    assert np.asarray(img.dataobj)[5, 7, 4] == pytest.approx(s["pixels"][4, 7, 5] * SLOPE + INTERCEPT)


def test_read_dicom_series_picks_the_largest_and_warns(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    study = (generate_uid(), "20220202")
    write_series(dicom, 10, iop=AXIAL, study=study, series_number=1, description="t1_small")
    big = write_series(dicom, 14, iop=AXIAL, study=study, series_number=2, description="t1_big")
    write_series(dicom, 3, study=study, series_number=3, description="localizer")
    img, meta = read_dicom_series(dicom)
    assert img.shape == (24, 20, 14)
    assert meta["SeriesInstanceUID"] == big["uid"] and meta["n_slices"] == 14
    assert "1 other" in meta["warning"] and "t1_small (10 slices)" in meta["warning"]
    assert "localizer" not in meta["warning"]  # not convertible, so not worth a warning


@pytest.mark.parametrize("content", ["empty", "text", "localizer", "missing"])
def test_read_dicom_series_without_a_convertible_series_raises(tmp_path: Path, content: str) -> None:
    dicom = tmp_path / "dicom"
    if content != "missing":
        dicom.mkdir()
    if content == "text":
        (dicom / "notes.txt").write_text("no images here\n")
    if content == "localizer":
        write_series(dicom, 12, description="AAHead_Scout", image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    expected = {
        "empty": r"no convertible DICOM image series in .*dicom \(0 files\)$",
        "text": r"\(1 file, 1 not a DICOM image\)$",
        "localizer": r"\(12 files, 1 localizer skipped\)$",
        "missing": "does not exist",
    }[content]
    with pytest.raises(AlzmriError, match=expected) as info:
        read_dicom_series(dicom)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "out").exists()
