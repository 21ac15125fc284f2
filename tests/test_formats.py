"""load_scan reads every volume format users have, with the same data and the same RAS geometry.

A small oblique, anisotropic volume is written to each format (with nibabel, SimpleITK, or by
hand where the writers would only check themselves against themselves), read back through
``load_scan``, and compared voxel by voxel in world coordinates with the original.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from scipy.io import netcdf_file
from typer.testing import CliRunner

from conftest import brain_volume
from test_dicom import write_series

from alzmri.io import dicom_zip
from alzmri.io.bids import read_bids
from alzmri.io.dicom import read_dicom_series
from alzmri.io.nifti import load_scan, load_volume
from alzmri.utils.errors import AlzmriError
from alzmri.utils.hashing import content_digest
from alzmri.utils.scan_files import scan_files

SHAPE = (20, 24, 28)
LPS = np.diag([-1.0, -1.0, 1.0])


def rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine() -> np.ndarray:
    """An oblique voxel→RAS affine with anisotropic voxels, as a tilted scanner acquisition."""
    affine = np.eye(4)
    affine[:3, :3] = rotation(0.15, -0.1, 0.2) @ np.diag([0.9, 1.1, 1.3])
    affine[:3, 3] = [-30.5, 12.25, -40.0]
    return affine


def int16_volume(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 32000, SHAPE).astype(np.int16)


def pet_volume(seed: int = 1) -> np.ndarray:
    """Float intensities up to 1e7, as PET counts (float32 keeps them to 7 digits)."""
    return np.random.default_rng(seed).uniform(0, 1e7, SHAPE).astype(np.float32)


def assert_same(img: nib.Nifti1Image, vol: np.ndarray, affine: np.ndarray, atol: float = 1e-3) -> None:
    """``img`` holds ``vol`` at the same world positions: same voxels, maybe in another axis order."""
    assert type(img) is nib.Nifti1Image and img.ndim == 3
    data = np.asanyarray(img.dataobj)
    assert data.dtype == np.float32 and img.get_data_dtype() == np.float32
    to_loaded = np.linalg.inv(img.affine) @ affine  # original voxel → loaded voxel
    rounded = np.round(to_loaded)
    np.testing.assert_allclose(to_loaded, rounded, atol=atol)
    np.testing.assert_allclose(img.affine @ rounded, affine, atol=atol)  # the same voxel→world map
    ijk = np.indices(vol.shape).reshape(3, -1)
    loaded = (rounded[:3, :3] @ ijk + rounded[:3, 3:]).astype(int)
    np.testing.assert_allclose(data[tuple(loaded)], vol.reshape(-1).astype(np.float64), rtol=1e-6)
    for corner in ([0, 0, 0], [19, 0, 0], [0, 23, 27], [19, 23, 27]):  # and a few world points explicitly
        world = affine @ [*corner, 1]
        np.testing.assert_allclose(img.affine @ [*(rounded @ [*corner, 1])[:3], 1], world, atol=atol)


def error(path: Path) -> str:
    with pytest.raises(AlzmriError) as info:
        load_scan(path)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def sitk_image(vol: np.ndarray, affine: np.ndarray, lps: bool = True) -> sitk.Image:
    """A SimpleITK image of ``vol`` (x, y, z) with the RAS ``affine`` given as ITK's LPS (or verbatim)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(vol.transpose(2, 1, 0)))
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    flip = LPS if lps else np.eye(3)
    image.SetSpacing([float(z) for z in zooms])
    image.SetDirection([float(v) for v in (flip @ (affine[:3, :3] / zooms)).ravel()])
    image.SetOrigin([float(v) for v in flip @ affine[:3, 3]])
    return image


def write_minc1(path: Path, raw: np.ndarray, affine: np.ndarray, image_range: tuple[float, float]) -> None:
    """A MINC1 (netCDF) file, int16 scaled from the full int16 range onto ``image_range``."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    cosines = affine[:3, :3] / zooms
    starts = cosines.T @ affine[:3, 3]  # MINC: world origin = direction cosines @ starts
    with netcdf_file(str(path), "w") as f:
        names = ("xspace", "yspace", "zspace")
        for i, name in enumerate(names):
            f.createDimension(name, raw.shape[i])
            dim = f.createVariable(name, "d", ())
            dim.spacing, dim.alignment = "regular__", "centre"
            dim.step, dim.start = float(zooms[i]), float(starts[i])
            dim.direction_cosines = cosines[:, i].astype(np.float64)
        image = f.createVariable("image", "h", names)
        image.signtype = "signed__"
        image.valid_range = np.array([-32768.0, 32767.0])
        image[:] = raw
        for name, value in (("image-min", image_range[0]), ("image-max", image_range[1])):
            var = f.createVariable(name, "d", ())
            var[()] = value


# --- each format: write, read through load_scan, compare --------------------------------------


def test_nifti1_nifti2_and_scaled_int16(tmp_path: Path) -> None:
    vol, affine = int16_volume(), oblique_affine()
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "a.nii.gz"))
    nib.save(nib.Nifti2Image(pet_volume(), affine), str(tmp_path / "b.nii"))
    img, warnings = load_scan(tmp_path / "a.nii.gz")
    assert_same(img, vol, affine)
    assert warnings == []
    img, _ = load_scan(tmp_path / "b.nii")
    assert_same(img, pet_volume(), affine)
    assert img.header.get_sform(coded=True)[1] > 0
    # Values far beyond int16, stored as int16 with scl_slope: the scaling must come out right.
    scaled = nib.Nifti1Image(pet_volume() * 100.0, affine)
    scaled.set_data_dtype(np.int16)
    nib.save(scaled, str(tmp_path / "c.nii.gz"))
    on_disk = nib.load(str(tmp_path / "c.nii.gz"))
    assert on_disk.get_data_dtype() == np.int16 and on_disk.dataobj.slope > 1000
    img, _ = load_scan(tmp_path / "c.nii.gz")
    assert_same(img, on_disk.get_fdata(), affine)
    assert np.asanyarray(img.dataobj).max() > 9e8  # no overflow


def test_uppercase_suffix_is_recognised(tmp_path: Path) -> None:
    vol, affine = int16_volume(), oblique_affine()
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "scan.nii"))
    (tmp_path / "scan.nii").rename(tmp_path / "SCAN.NII")
    assert_same(load_scan(tmp_path / "SCAN.NII")[0], vol, affine)
    nib.save(nib.MGHImage(vol, affine), str(tmp_path / "scan.mgz"))
    (tmp_path / "scan.mgz").rename(tmp_path / "SCAN.MGZ")
    assert_same(load_scan(tmp_path / "SCAN.MGZ")[0], vol, affine)


@pytest.mark.parametrize("named", ["hdr", "img"])
def test_nifti_pair_either_half(tmp_path: Path, named: str) -> None:
    vol, affine = int16_volume(), oblique_affine()
    nib.save(nib.Nifti1Pair(vol, affine), str(tmp_path / "pair.hdr"))
    img, warnings = load_scan(tmp_path / f"pair.{named}")
    assert_same(img, vol, affine)
    assert warnings == []


def test_compressed_and_uppercase_pairs(tmp_path: Path) -> None:
    vol, affine = int16_volume(), oblique_affine()
    nib.save(nib.Nifti1Pair(vol, affine), str(tmp_path / "gz.img.gz"))
    assert (tmp_path / "gz.hdr.gz").is_file()
    assert_same(load_scan(tmp_path / "gz.img.gz")[0], vol, affine)
    assert_same(load_scan(tmp_path / "gz.hdr.gz")[0], vol, affine)
    nib.save(nib.Nifti2Pair(pet_volume(), affine), str(tmp_path / "UP.HDR"))
    assert_same(load_scan(tmp_path / "UP.IMG")[0], pet_volume(), affine)


def test_analyze_and_spm_analyze(tmp_path: Path) -> None:
    vol = int16_volume()
    # SPM Analyze: an oblique affine goes to the .mat next to the pair.
    nib.save(nib.Spm2AnalyzeImage(vol, oblique_affine()), str(tmp_path / "spm.hdr"))
    assert (tmp_path / "spm.mat").is_file()
    assert_same(load_scan(tmp_path / "spm.img")[0], vol, oblique_affine())
    # Without the .mat, and in plain Analyze 7.5: no orientation on disk, so the convention
    # nibabel (and SPM) read it with: radiological x flip, origin at the centre.
    (tmp_path / "spm.mat").unlink()
    default = nib.load(str(tmp_path / "spm.hdr")).affine
    assert default[0, 0] < 0 and np.allclose(default[:3, :3], np.diag([-0.9, 1.1, 1.3]), atol=1e-6)
    assert_same(load_scan(tmp_path / "spm.hdr")[0], vol, default)
    nib.save(nib.AnalyzeImage(pet_volume(), default), str(tmp_path / "an.hdr"))
    assert_same(load_scan(tmp_path / "an.img")[0], pet_volume(), nib.load(str(tmp_path / "an.hdr")).affine)


def test_4d_pair_uses_first_volume_with_a_warning(tmp_path: Path) -> None:
    vol, affine = int16_volume(), oblique_affine()
    nib.save(nib.Nifti1Pair(np.stack([vol, vol // 2], axis=-1), affine), str(tmp_path / "four.hdr"))
    img, warnings = load_scan(tmp_path / "four.hdr")
    assert_same(img, vol, affine)
    assert warnings == ["4D input with 2 volumes: used the first"]


@pytest.mark.parametrize("suffix", ["mgz", "mgh"])
def test_mgz_and_mgh(tmp_path: Path, suffix: str) -> None:
    affine = oblique_affine()
    for name, vol in (("int", int16_volume()), ("pet", pet_volume())):
        nib.save(nib.MGHImage(vol, affine), str(tmp_path / f"{name}.{suffix}"))
        img, warnings = load_scan(tmp_path / f"{name}.{suffix}")
        assert_same(img, vol, affine)
        assert warnings == []


def test_minc2_written_by_simpleitk(tmp_path: Path) -> None:
    vol, affine = pet_volume(), oblique_affine()
    sitk.WriteImage(sitk_image(vol, affine, lps=False), str(tmp_path / "scan.mnc"))  # MINC world is RAS
    assert (tmp_path / "scan.mnc").read_bytes()[:4] == b"\x89HDF"
    assert_same(load_scan(tmp_path / "scan.mnc")[0], vol, affine)


def test_minc2_geometry_matches_nibabel_reference_file() -> None:
    """nibabel's MINC2 test file, with the affine nibabel's own tests expect (from mincinfo)."""
    data = Path(nib.__file__).parent / "tests" / "data"
    if not (data / "minc2_1_scale.mnc").is_file() or not (data / "minc1_1_scale.mnc").is_file():
        pytest.skip("nibabel's test data are not installed")
    expected = np.array([[0, 0, 2.0, -20], [0, 2.0, 0, -20], [2.0, 0, 0, -10], [0, 0, 0, 1]])  # (z, y, x) voxels
    minc1 = nib.load(str(data / "minc1_1_scale.mnc"))  # the same image as MINC1, read by nibabel
    np.testing.assert_allclose(minc1.affine, expected)
    assert_same(load_scan(data / "minc2_1_scale.mnc")[0], minc1.get_fdata(), expected)
    assert_same(load_scan(data / "minc1_1_scale.mnc")[0], minc1.get_fdata(), expected)


def test_minc1_written_by_hand(tmp_path: Path) -> None:
    raw, affine = int16_volume(), oblique_affine()
    write_minc1(tmp_path / "scan.mnc", raw, affine, (-65536.0, 65534.0))  # real value = 2 × stored
    assert (tmp_path / "scan.mnc").read_bytes()[:4] == b"CDF\x01"
    img, _ = load_scan(tmp_path / "scan.mnc")
    assert_same(img, raw.astype(np.float64) * 2, affine)


@pytest.mark.parametrize("suffix", ["nrrd", "nhdr", "mha", "mhd"])
def test_nrrd_and_metaimage_written_by_simpleitk(tmp_path: Path, suffix: str) -> None:
    affine = oblique_affine()
    for name, vol in (("int", int16_volume()), ("pet", pet_volume())):
        sitk.WriteImage(sitk_image(vol, affine), str(tmp_path / f"{name}.{suffix}"))
        assert_same(load_scan(tmp_path / f"{name}.{suffix}")[0], vol, affine)
    assert len(scan_files(tmp_path / f"int.{suffix}")) == (2 if suffix in ("nhdr", "mhd") else 1)  # detached data file


def test_nrrd_in_ras_space_written_by_hand(tmp_path: Path) -> None:
    """A NRRD header written without ITK, in RAS: checks the LPS→RAS handling independently."""
    vol, affine = int16_volume(), oblique_affine()
    (tmp_path / "vol.raw").write_bytes(vol.astype("<i2").tobytes(order="F"))  # first axis fastest
    axes = " ".join("(" + ",".join(f"{v:.10f}" for v in affine[:3, i]) + ")" for i in range(3))
    origin = "(" + ",".join(f"{v:.10f}" for v in affine[:3, 3]) + ")"
    (tmp_path / "scan.nhdr").write_text(
        "NRRD0004\ntype: short\ndimension: 3\nspace: right-anterior-superior\nsizes: 20 24 28\n"
        f"space directions: {axes}\nkinds: domain domain domain\nendian: little\nencoding: raw\n"
        f"space origin: {origin}\ndata file: vol.raw\n"
    )
    assert_same(load_scan(tmp_path / "scan.nhdr")[0], vol, affine)


def test_dicom_zip_reads_like_the_folder_and_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    series = tmp_path / "series"
    write_series(series, 12, nested=True)
    (series / "README.txt").write_text("not DICOM\n")
    archive = tmp_path / "input" / "scan.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(series.rglob("*")):
            if f.is_file():
                zf.write(f, Path("export") / f.relative_to(series))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    img, warnings = load_scan(archive)
    expected, _ = read_dicom_series(series)
    assert_same(img, np.asanyarray(expected.dataobj), expected.affine, atol=1e-6)
    assert warnings == []
    assert list(temp.iterdir()) == []  # the unpacked copy is gone
    assert sorted(p.name for p in archive.parent.iterdir()) == ["scan.zip"]  # nothing next to the input


# --- bad inputs: one line, naming the file ----------------------------------------------------


def test_img_without_hdr_and_hdr_without_img(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Pair(int16_volume(), oblique_affine()), str(tmp_path / "x.hdr"))
    (tmp_path / "x.hdr").unlink()
    message = error(tmp_path / "x.img")
    assert "x.hdr" in message and "no header" in message and str(tmp_path / "x.img") in message
    nib.save(nib.Nifti1Pair(int16_volume(), oblique_affine()), str(tmp_path / "y.hdr"))
    (tmp_path / "y.img").unlink()
    assert "y.img" in error(tmp_path / "y.hdr")


def _zip_series(tmp_path: Path, n_series: int) -> Path:
    folder = tmp_path / "dicom"
    for k in range(n_series):
        write_series(folder / f"s{k}", 12, series_number=k + 2, seed=k)
    archive = tmp_path / "two.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(folder.rglob("*")):
            zf.write(f, f.relative_to(folder))
    return archive


def test_zip_with_two_series_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    message = error(_zip_series(tmp_path, 2))
    assert "holds 2 convertible DICOM series" in message and "two.zip" in message
    assert list(temp.iterdir()) == []


@pytest.mark.parametrize("name", ["../evil.dcm", "a/../../evil.dcm", "/abs/evil.dcm", "C:/evil.dcm", "..\\evil.dcm"])
def test_zip_with_unsafe_member_is_refused(tmp_path: Path, name: str) -> None:
    archive = tmp_path / "in" / "bad.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/readme.txt", "fine")
        zf.writestr(zipfile.ZipInfo(name), b"payload")
    message = error(archive)
    assert "has unsafe path" in message and "bad.zip" in message
    assert not list(tmp_path.rglob("evil.dcm"))


def test_zip_bomb_guard_and_other_bad_zips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", b"\0" * 100_000)  # compresses to ~100 bytes
    monkeypatch.setattr(dicom_zip, "MAX_UNPACKED_BYTES", 50_000)
    assert "limit" in error(archive)
    monkeypatch.undo()
    assert "no convertible DICOM image series in zip" in error(archive) and "big.zip" in error(archive)
    (tmp_path / "corrupt.zip").write_bytes(b"PK\x03\x04 not really a zip")
    assert "cannot read DICOM zip" in error(tmp_path / "corrupt.zip")


def test_mgz_with_frames_is_refused(tmp_path: Path) -> None:
    nib.save(nib.MGHImage(np.zeros((*SHAPE, 4), np.float32), oblique_affine()), str(tmp_path / "frames.mgz"))
    message = error(tmp_path / "frames.mgz")
    assert "has 4 frames" in message and "3D T1w" in message and "frames.mgz" in message


def test_unknown_suffix_and_missing_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image\n")
    message = error(tmp_path / "notes.txt")
    assert "unknown scan format" in message and "notes.txt" in message
    assert all(s in message for s in (".nii.gz", ".hdr", ".mgz", ".mnc", ".nrrd", ".mha", ".zip", "DICOM"))
    assert "not found" in error(tmp_path / "missing.mgz")
    assert "not found" in error(tmp_path / "missing.nii.gz")
    assert "not found" in error(tmp_path / "missing")


@pytest.mark.parametrize("name", ["bad.mgz", "bad.mgh", "bad.mnc", "bad.nrrd", "bad.nhdr", "bad.mha", "bad.mhd", "bad.nii.gz"])
def test_corrupt_files_give_one_cannot_read_line(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x1f\x8b\x08 this is not an image at all\n" * 3)
    message = error(tmp_path / name)
    assert message.startswith("cannot read") and name in message


def test_corrupt_pair_and_truncated_mgz(tmp_path: Path) -> None:
    (tmp_path / "bad.hdr").write_bytes(b"garbage" * 10)
    (tmp_path / "bad.img").write_bytes(b"\0" * 100)
    assert error(tmp_path / "bad.img").startswith("cannot read Analyze/NIfTI pair file")
    nib.save(nib.MGHImage(pet_volume(), oblique_affine()), str(tmp_path / "t.mgz"))
    whole = (tmp_path / "t.mgz").read_bytes()
    (tmp_path / "t.mgz").write_bytes(whole[: len(whole) // 2])
    assert error(tmp_path / "t.mgz").startswith("cannot read MGH/MGZ file")


def test_checks_apply_to_every_format(tmp_path: Path) -> None:
    nan = pet_volume()
    nan[1, 2, 3] = np.nan
    nib.save(nib.MGHImage(nan, oblique_affine()), str(tmp_path / "nan.mgz"))
    assert "NaN" in error(tmp_path / "nan.mgz")
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((24, 20), np.float32)), str(tmp_path / "flat.nrrd"))
    assert "not a 3D volume" in error(tmp_path / "flat.nrrd")
    singular = oblique_affine()
    singular[:3, 2] = 0
    pair = nib.Nifti1Pair(int16_volume(), None)
    pair.set_sform(singular, code=1)  # an sform need not decompose, so a bad one can be written
    nib.save(pair, str(tmp_path / "sing.hdr"))
    message = error(tmp_path / "sing.hdr")
    assert "invalid" in message or "singular" in message
    sitk.WriteImage(sitk.Compose([sitk_image(pet_volume(), oblique_affine())] * 3), str(tmp_path / "rgb.mha"))
    assert "values per voxel" in error(tmp_path / "rgb.mha")
    frames = sitk.JoinSeries([sitk_image(pet_volume(), oblique_affine())] * 3)
    sitk.WriteImage(frames, str(tmp_path / "frames.nrrd"))
    assert "has 3 frames" in error(tmp_path / "frames.nrrd")
    one = sitk.JoinSeries([sitk_image(pet_volume(), oblique_affine())])
    sitk.WriteImage(one, str(tmp_path / "one.nrrd"))
    assert_same(load_scan(tmp_path / "one.nrrd")[0], pet_volume(), oblique_affine())


def test_load_volume_still_reads_nifti_only(tmp_path: Path) -> None:
    vol, affine = int16_volume(), oblique_affine()
    nib.save(nib.Nifti1Image(vol, affine), str(tmp_path / "a.nii"))
    assert_same(load_volume(tmp_path / "a.nii"), vol, affine)
    nib.save(nib.MGHImage(vol, affine), str(tmp_path / "a.mgz"))
    with pytest.raises(AlzmriError, match="cannot read NIfTI file"):
        load_volume(tmp_path / "a.mgz")


# --- cache keys and discovery -----------------------------------------------------------------


def test_content_digest_covers_header_and_data_file(tmp_path: Path) -> None:
    single = tmp_path / "one.nii"
    nib.save(nib.Nifti1Image(int16_volume(), oblique_affine()), str(single))
    assert content_digest(single) == hashlib.sha256(single.read_bytes()).hexdigest()[:16]  # unchanged for one file

    nib.save(nib.Nifti1Pair(int16_volume(), oblique_affine()), str(tmp_path / "p.hdr"))
    hdr, img = tmp_path / "p.hdr", tmp_path / "p.img"
    assert scan_files(img) == [hdr, img] and content_digest(hdr) == content_digest(img)
    before = content_digest(hdr)
    img.write_bytes(img.read_bytes()[:-2] + b"\x01\x02")
    edited = content_digest(hdr)
    assert edited != before
    header = bytearray(hdr.read_bytes())
    header[148] ^= 0xFF  # descrip
    hdr.write_bytes(bytes(header))
    assert content_digest(img) != edited

    nib.save(nib.Spm2AnalyzeImage(int16_volume(), oblique_affine()), str(tmp_path / "spm.hdr"))
    assert scan_files(tmp_path / "spm.img")[-1] == tmp_path / "spm.mat"

    for suffix in ("mhd", "nhdr"):
        sitk.WriteImage(sitk_image(int16_volume(), oblique_affine()), str(tmp_path / f"m.{suffix}"))
        files = scan_files(tmp_path / f"m.{suffix}")
        assert len(files) == 2 and files[0].name == f"m.{suffix}", files
        before = content_digest(files[0])
        files[1].write_bytes(files[1].read_bytes()[:-1] + b"\x07")
        assert content_digest(files[0]) != before
        for f in files:
            f.unlink()
    sitk.WriteImage(sitk_image(int16_volume(), oblique_affine()), str(tmp_path / "local.mha"))
    assert scan_files(tmp_path / "local.mha") == [tmp_path / "local.mha"]


def test_detached_data_lists_and_patterns(tmp_path: Path) -> None:
    for i in (1, 2, 3):
        (tmp_path / f"slice{i:03d}.raw").write_bytes(bytes([i]))
    (tmp_path / "pattern.mhd").write_text("NDims = 3\nDimSize = 1 1 3\nElementType = MET_UCHAR\nElementDataFile = slice%03d.raw 1 3 1\n")
    assert [p.name for p in scan_files(tmp_path / "pattern.mhd")][1:] == ["slice001.raw", "slice002.raw", "slice003.raw"]
    (tmp_path / "list.nhdr").write_text("NRRD0004\ntype: uchar\ndimension: 3\nsizes: 1 1 3\nencoding: raw\ndata file: LIST\nslice001.raw\nslice003.raw\n")
    assert [p.name for p in scan_files(tmp_path / "list.nhdr")][1:] == ["slice001.raw", "slice003.raw"]
    before = content_digest(tmp_path / "list.nhdr")
    (tmp_path / "slice003.raw").write_bytes(b"\x09")
    assert content_digest(tmp_path / "list.nhdr") != before


def test_bids_finds_other_t1w_formats_and_lists_a_pair_once(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    vol, affine = int16_volume(), oblique_affine()
    for sub, ses, suffix in (("sub-01", "ses-01", "mgz"), ("sub-02", None, "hdr"), ("sub-03", "ses-01", "nrrd"), ("sub-04", "ses-02", "nii")):
        anat = root / sub / (ses or "") / "anat"
        anat.mkdir(parents=True)
        name = anat / f"{sub}{'_' + ses if ses else ''}_T1w.{suffix}"
        if suffix == "mgz":
            nib.save(nib.MGHImage(vol, affine), str(name))
        elif suffix == "hdr":
            nib.save(nib.Nifti1Pair(vol, affine), str(name))
        elif suffix == "nrrd":
            sitk.WriteImage(sitk_image(vol, affine), str(name))
        else:
            nib.save(nib.Nifti1Image(vol, affine), str(name))
    rows = [("sub-01", "ses-01", "CN"), ("sub-02", "ses-01", "AD"), ("sub-03", "ses-01", "MCI"), ("sub-04", "ses-02", "CN")]
    pd.DataFrame(rows, columns=["participant_id", "session_id", "diagnosis"]).to_csv(root / "labels.tsv", sep="\t", index=False)
    scans = read_bids(root)
    assert [Path(p).suffix for p in scans["path"]] == [".mgz", ".hdr", ".nrrd", ".nii"]
    for p in scans["path"]:
        assert_same(load_scan(p)[0], vol, affine, atol=1e-3)
    (root / "empty").mkdir()
    with pytest.raises(AlzmriError, match=r"no T1w images .*mgz.*found under"):
        read_bids(root / "empty")


def test_preprocess_cli_on_an_analyze_pair(tmp_path: Path) -> None:
    from alzmri.cli.main import app

    data = tmp_path / "data"
    data.mkdir()
    nib.save(nib.Spm2AnalyzeImage(brain_volume(seed=3), np.diag([-2.0, 2.0, 2.0, 1.0])), str(data / "spm.hdr"))
    manifest = data / "scans.tsv"
    pd.DataFrame([{"participant_id": "sub-01", "session_id": "ses-01", "path": "spm.img"}]).to_csv(manifest, sep="\t", index=False)
    cache = tmp_path / "cache"
    result = CliRunner().invoke(app, ["preprocess", str(manifest), str(cache), "--size", "16", "--spacing", "2", "--skull-strip", "none",
                                      "--steps", "reorient,resample,skull_strip,crop,resize,normalize", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    cached = pd.read_csv(cache / "manifest.tsv", sep="\t")
    assert len(cached) == 1
    assert np.load(cache / cached["array"].iloc[0]).shape == (16, 16, 16)
