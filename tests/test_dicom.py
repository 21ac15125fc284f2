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
# A Siemens MPRAGE's sequence tags: what classify_series needs to call a series T1w.
MPRAGE_TAGS = {
    "MRAcquisitionType": "3D", "ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SP", "MP"], "ScanOptions": "IR",
    "SequenceName": "*tfl3d1_16ns", "RepetitionTime": 2300.0, "EchoTime": 2.98, "InversionTime": 900.0, "FlipAngle": 9.0,
}


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
    tags: dict | None = None,
    mutate=None,
) -> dict:
    """Write one series in shuffled order under random names; return its geometry and pixels.

    The sequence tags are an MPRAGE's (``MPRAGE_TAGS``); ``tags`` overrides them and sets others
    (a value of None removes the tag). ``mutate(k, ds)`` may change slice ``k`` (index along the
    slice normal) before it is saved.
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
        for keyword, value in {**MPRAGE_TAGS, **(tags or {})}.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
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
    short = write_series(dicom, 5, study=study, series_number=2, description="t1_mprage_short")
    table = convert_dicom_dir(dicom, tmp_path / "out", progress=False).set_index("series_uid")
    assert len(table) == 3
    assert table.loc[main["uid"], "status"] == "converted"
    assert table.loc[loc["uid"], ["kind", "status", "reason"]].tolist() == [
        "localizer", "skipped", "localizer/scout: ImageType ORIGINAL\\PRIMARY\\M\\LOCALIZER; not a T1w",
    ]
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
    assert pd.read_csv(out / "conversion.tsv", sep="\t")["reason"].tolist() == ["localizer/scout: ImageType ORIGINAL\\PRIMARY\\LOCALIZER; not a T1w"]


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


# Realistic sequence tags (Siemens values as the Trio in shared/data writes them; GE as an ADNI-era SPGR).
FIELDMAP_TAGS = {
    "MRAcquisitionType": "2D", "ScanningSequence": "GR", "SequenceVariant": "SP", "ScanOptions": None, "SequenceName": "*fm2d2r",
    "RepetitionTime": 488.0, "EchoTime": 7.38, "InversionTime": None, "FlipAngle": 60.0, "ProtocolName": "gre_field_mapping",
}
GE_SPGR_TAGS = {
    "Manufacturer": "GE MEDICAL SYSTEMS", "MRAcquisitionType": "3D", "ScanningSequence": "GR", "SequenceVariant": ["SS", "SP"],
    "ScanOptions": ["FAST_GEMS", "EDR_GEMS", "PFF"], "SequenceName": "efgre3d", "RepetitionTime": 7.6, "EchoTime": 3.1,
    "InversionTime": None, "FlipAngle": 12.0,
}
T2_TAGS = {
    "MRAcquisitionType": "2D", "ScanningSequence": "SE", "SequenceVariant": ["SK", "SP", "OSP"], "ScanOptions": ["PFP", "SAT2"],
    "SequenceName": "*tse2d1_11", "RepetitionTime": 5000.0, "EchoTime": 98.0, "InversionTime": None, "FlipAngle": 150.0,
}
FLAIR_TAGS = {**T2_TAGS, "ScanningSequence": ["SE", "IR"], "SequenceName": "*tir2d1_13", "RepetitionTime": 9000.0, "EchoTime": 81.0, "InversionTime": 2500.0}
NO_SEQUENCE_TAGS = dict.fromkeys(MPRAGE_TAGS)  # removes them all


def two_echoes(k: int, ds: Dataset) -> None:
    ds.EchoTime, ds.EchoNumbers = (4.92, 1) if k % 2 == 0 else (7.38, 2)


def write_siemens_session(dicom: Path) -> dict[str, str]:
    """One Siemens session: localizer, MPRAGE, its MPR reformat, field map magnitude + phase, T2w, FLAIR."""
    study = (generate_uid(), "20100723")
    common = {"study": study, "iop": AXIAL, "patient": "RordenLab"}
    fm = {"gap": 3.0, "pixel_spacing": (3.0, 3.0), "description": "gre_field_mapping"}
    t2 = {"gap": 5.0, "pixel_spacing": (0.9, 0.9)}
    return {
        "localizer": write_series(dicom, 3, series_number=1, description="localizer", tags={**FIELDMAP_TAGS, "SequenceName": "*fl2d1", "ProtocolName": "localizer", "EchoTime": 5.0, "FlipAngle": 20.0}, **common)["uid"],
        "magnitude": write_series(dicom, 24, series_number=2, tags=FIELDMAP_TAGS, mutate=two_echoes, **fm, **common)["uid"],
        "phase": write_series(dicom, 12, series_number=3, image_type=("ORIGINAL", "PRIMARY", "P", "ND"), tags=FIELDMAP_TAGS, **fm, **common)["uid"],
        "t2": write_series(dicom, 12, series_number=4, description="t2_tse_tra", tags=T2_TAGS, **t2, **common)["uid"],
        "flair": write_series(dicom, 12, series_number=5, description="t2_tirm_tra_dark-fluid", tags=FLAIR_TAGS, **t2, **common)["uid"],
        "mprage": write_series(dicom, 16, series_number=19, description="t1_MPRAGEcr_noGRAPPA", image_type=("ORIGINAL", "PRIMARY", "M", "ND", "NORM"), **common)["uid"],
        "mpr": write_series(
            dicom, 20, series_number=20, description="t1_MPRAGEcr_noGRAPPA_MPR_tra",
            image_type=("DERIVED", "SECONDARY", "MPR", "CSA MPR", "CSAPARALLEL", "M", "ND", "NORM"), **common,
        )["uid"],
    }


def test_only_t1w_series_are_converted(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    uid = write_siemens_session(dicom)
    spgr = write_series(dicom, 14, patient="GE-7", description="SAG 3D SPGR", iop=AXIAL, tags=GE_SPGR_TAGS)["uid"]
    before = snapshot(dicom)
    table = convert_dicom_dir(dicom, out, progress=False).set_index("series_uid")
    assert snapshot(dicom) == before

    expected = {
        "localizer": "localizer", "magnitude": "fieldmap", "phase": "fieldmap", "t2": "T2w", "flair": "FLAIR", "mprage": "T1w", "mpr": "derived",
    }
    assert {name: table.loc[u, "kind"] for name, u in uid.items()} == expected
    assert table.loc[spgr, ["kind", "status"]].tolist() == ["T1w", "converted"]
    siemens = table[table["participant_id"] == "sub-RordenLab"]
    assert siemens.loc[siemens["status"] == "converted"].index.tolist() == [uid["mprage"]]  # exactly one T1w
    assert (siemens.drop(uid["mprage"])["status"] == "skipped").all()
    assert table.loc[uid["mprage"], "path"] == "sub-RordenLab/ses-20100723/anat/sub-RordenLab_ses-20100723_run-01_T1w.nii.gz"
    assert table.loc[uid["mprage"], "reason"] == "T1w: MRAcquisitionType 3D, ScanningSequence GR\\IR, SequenceName *tfl3d1_16ns, TE 2.98 ms, TI 900 ms"

    written = pd.read_csv(out / "conversion.tsv", sep="\t", dtype=str, keep_default_na=False).set_index("series_uid")
    assert list(written.columns) == ["participant_id", "session_id", "series_description", "n_files", "kind", "status", "reason", "path"]
    assert written.loc[uid["phase"], ["kind", "status", "reason"]].tolist() == [
        "fieldmap", "skipped",
        "fieldmap: SequenceName *fm2d2r, SeriesDescription 'gre_field_mapping', ImageType ORIGINAL\\PRIMARY\\P\\ND; not a T1w",
    ]
    assert written.loc[uid["magnitude"], "reason"] == "fieldmap: SequenceName *fm2d2r, SeriesDescription 'gre_field_mapping', 2 echo times 4.92/7.38 ms; not a T1w"
    assert written.loc[uid["mpr"], "reason"].startswith("derived: ImageType DERIVED\\SECONDARY\\MPR")
    assert written.loc[uid["localizer"], "reason"] == "localizer/scout: SeriesDescription 'localizer'; not a T1w"
    assert written.loc[uid["t2"], "reason"] == "T2w: SeriesDescription 't2_tse_tra'; not a T1w"
    assert written.loc[uid["flair"], "reason"] == "FLAIR: SeriesDescription 't2_tirm_tra_dark-fluid'; not a T1w"
    assert all(written.loc[u, "path"] == "" for name, u in uid.items() if name != "mprage")

    anat = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.nii.gz"))
    assert anat == [
        "sub-GE7/ses-20240101/anat/sub-GE7_ses-20240101_run-01_T1w.nii.gz",
        "sub-RordenLab/ses-20100723/anat/sub-RordenLab_ses-20100723_run-01_T1w.nii.gz",
    ]
    sidecar = json.loads((out / anat[1].replace(".nii.gz", ".json")).read_text())
    assert sidecar["SeriesKind"] == "T1w" and sidecar["SeriesKindReason"].startswith("T1w: MRAcquisitionType 3D")
    manifest = pd.read_csv(out / "manifest.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert manifest["path"].tolist() == anat[::-1] or sorted(manifest["path"]) == anat
    assert len(manifest) == 2

    result = CliRunner().invoke(app, ["convert", str(dicom), str(out), "--no-progress"])  # resumes
    assert result.exit_code == 0, result.output
    assert "converted 2 series (2 already present), skipped 6 (FLAIR, T2w, derived, fieldmap, localizer/scout)" in result.stdout


def test_read_dicom_series_reads_the_t1w_not_a_larger_field_map(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    uid = write_siemens_session(dicom)  # the field map (24) and the MPR (20) have more slices than the MPRAGE (16)
    img, meta = read_dicom_series(dicom)
    assert meta["SeriesInstanceUID"] == uid["mprage"] and meta["n_slices"] == 16 and meta["warning"] == ""
    assert img.shape == (24, 20, 16)


def test_read_dicom_series_without_a_t1w_says_what_it_skipped(tmp_path: Path) -> None:
    dicom = tmp_path / "dicom"
    study = (generate_uid(), "20100723")
    write_series(dicom, 12, study=study, series_number=2, description="gre_field_mapping", tags=FIELDMAP_TAGS, iop=AXIAL)
    write_series(dicom, 12, study=study, series_number=3, description="gre_field_mapping", image_type=("ORIGINAL", "PRIMARY", "P", "ND"), tags=FIELDMAP_TAGS, iop=AXIAL)
    write_series(dicom, 12, study=study, series_number=4, description="t2_tse_tra", tags=T2_TAGS, iop=AXIAL)
    with pytest.raises(AlzmriError, match=r"no convertible DICOM image series in .*\(36 files, 2 fieldmap skipped, 1 T2w skipped\)$") as info:
        read_dicom_series(dicom)
    assert "\n" not in str(info.value)
    with pytest.raises(AlzmriError, match=r"no series converted .*3 skipped, 0 failed; kinds: 2 fieldmap, 1 T2w"):
        convert_dicom_dir(dicom, tmp_path / "out", progress=False)


def test_a_series_without_sequence_tags_is_not_assumed_t1w(tmp_path: Path) -> None:
    dicom, out = tmp_path / "dicom", tmp_path / "out"
    s = write_series(dicom, 12, iop=AXIAL, tags=NO_SEQUENCE_TAGS)
    with pytest.raises(AlzmriError, match="no series converted"):
        convert_dicom_dir(dicom, out, progress=False)
    row = pd.read_csv(out / "conversion.tsv", sep="\t", dtype=str, keep_default_na=False).iloc[0]
    assert (row["kind"], row["status"]) == ("unknown", "skipped")
    assert row["reason"] == "unknown: no MRAcquisitionType, ScanningSequence, EchoTime, RepetitionTime, FlipAngle (SeriesDescription 'MPRAGE'); not known to be T1w"

    # read_dicom_series reads a folder's only series of unknown kind, and says so.
    img, meta = read_dicom_series(dicom)
    assert meta["SeriesInstanceUID"] == s["uid"] and img.shape == (24, 20, 12)
    assert meta["warning"].startswith("read MPRAGE (12 slices) as T1w although its tags do not say what it is (unknown: no MRAcquisitionType")
    # ... but not one of two, nor one beside a field map's or a localizer's T1w-looking tags
    write_series(dicom, 12, iop=AXIAL, series_number=5, tags=NO_SEQUENCE_TAGS)
    with pytest.raises(AlzmriError, match=r"\(24 files, 2 unknown-kind skipped\)$"):
        read_dicom_series(dicom)


def jitter(k: int, ds: Dataset) -> None:
    """Positions off by 0.02 mm every other slice (scanner rounding): accepted, but ITK warns."""
    ds.ImagePositionPatient = [40.0, -60.0, 70.0 + k * 1.2 + (0.02 if k % 2 else 0.0)]
    ds.ProtocolName = "t1_mprage_" + "x" * 70  # longer than LO allows: pydicom warns when it reads it


def test_library_warnings_go_to_the_log_not_the_terminal(tmp_path: Path, capfd, caplog) -> None:
    import warnings

    dicom, out = tmp_path / "dicom", tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while the test writes the long ProtocolName
        s = write_series(dicom, 12, iop=AXIAL, mutate=jitter)
    capfd.readouterr()
    with caplog.at_level("WARNING", logger="alzmri.io.dicom"):
        table = convert_dicom_dir(dicom, out, progress=False)
        img, meta = read_dicom_series(dicom)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == "", captured
    assert table["status"].tolist() == ["converted"] and meta["SeriesInstanceUID"] == s["uid"]

    log = (out / "conversion.log").read_text()
    assert "ITK: ImageSeriesReader: Non uniform sampling or missing slices detected" in log
    assert "series 2 'MPRAGE': pydicom: The value length (80) exceeds the maximum length of 64 allowed for VR LO.\n" in log
    assert table.attrs["warnings"] == len(log.splitlines()) >= 2
    assert "0x" not in log and ".hxx" not in log  # one line per message, without ITK's source paths
    logged = [r.getMessage() for r in caplog.records if r.name == "alzmri.io.dicom"]
    assert sum("Non uniform sampling" in m for m in logged) == 2  # convert, then read_dicom_series
    assert sum("allowed for VR LO" in m for m in logged) == 2

    # The CLI prints its summary and points at the log; the warnings themselves stay out of the terminal.
    result = CliRunner().invoke(app, ["convert", str(dicom), str(tmp_path / "out2"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "Non uniform" not in result.output and "VR LO" not in result.output
    assert f"DICOM reader warnings in {tmp_path / 'out2' / 'conversion.log'}" in result.stdout
    assert "Non uniform" not in capfd.readouterr().err
