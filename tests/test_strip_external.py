"""External skull strippers, faked by small scripts that mimic each tool's command line."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from alzmri.preprocessing.strip_external import external_brain_mask
from alzmri.utils.errors import AlzmriError

SIZE = (20, 24, 18)  # (x, y, z)
CENTRE, RADIUS = (9, 13, 8), 6.0

# Shared by every fake: argv → (input, mask path); writes a voxel-index sphere on the input's grid.
FAKE = """#!{python}
import sys, time
import nibabel as nib, numpy as np
argv = sys.argv[1:]
{parse}
img = nib.load(inp)
i, j, k = np.indices(img.shape)
mask = ((i - {c[0]}) ** 2 + (j - {c[1]}) ** 2 + (k - {c[2]}) ** 2 <= {r} ** 2).astype(np.uint8)
out = nib.Nifti1Image(mask, img.affine)
{post}
nib.save(out, mask_path)
"""
PARSE = {
    "mri_synthstrip": "inp, mask_path = argv[argv.index('-i') + 1], argv[argv.index('-m') + 1]",
    "hd-bet": (  # v2 flags only, like HD-BET >= 2.0
        "if '-mode' in argv:\n"
        "    sys.stderr.write('usage: hd-bet ...\\nhd-bet: error: unrecognized arguments: -mode fast\\n'); sys.exit(2)\n"
        "assert '--save_bet_mask' in argv and argv[argv.index('-device') + 1] == 'cpu'\n"
        "inp, mask_path = argv[argv.index('-i') + 1], argv[argv.index('-o') + 1][:-7] + '_bet.nii.gz'"
    ),
    "hd-bet-v1": (  # v1 flags only: rejects v2's, writes OUT_mask.nii.gz
        "if '--disable_tta' in argv:\n"
        "    sys.stderr.write('hd-bet: error: unrecognized arguments: --disable_tta --save_bet_mask\\n'); sys.exit(2)\n"
        "assert argv[argv.index('-s') + 1] == '1'\n"
        "inp, mask_path = argv[argv.index('-i') + 1], argv[argv.index('-o') + 1][:-7] + '_mask.nii.gz'"
    ),
    "bet": (
        "import os; assert os.environ['FSLOUTPUTTYPE'] == 'NIFTI_GZ' and '-m' in argv\n"
        "inp, mask_path = argv[0], argv[1] + '_mask.nii.gz'"
    ),
}


def fake_tool(folder: Path, name: str, parse: str, post: str = "") -> None:
    folder.mkdir(exist_ok=True)
    script = folder / name
    script.write_text(FAKE.format(python=sys.executable, parse=parse, post=post, c=CENTRE, r=RADIUS))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def scan() -> sitk.Image:
    """Anisotropic, oblique-free but non-trivial LPS grid: axes run P, I, L (as a sagittal DICOM)."""
    data = np.random.default_rng(0).random(SIZE[::-1], dtype=np.float32)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((1.0, 1.5, 2.0))
    image.SetOrigin((12.0, -30.0, 45.0))
    image.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0))  # columns: +y, -z, +x (LPS)
    return image


def expected() -> np.ndarray:
    i, j, k = np.indices(SIZE)
    return (i - CENTRE[0]) ** 2 + (j - CENTRE[1]) ** 2 + (k - CENTRE[2]) ** 2 <= RADIUS**2


@pytest.mark.parametrize(
    ("method", "exe", "parse", "post"),
    [
        ("synthstrip", "mri_synthstrip", PARSE["mri_synthstrip"], ""),
        # written on another grid (reoriented to RAS, as some tools do): must be resampled back
        ("synthstrip", "mri_synthstrip", PARSE["mri_synthstrip"], "out = nib.as_closest_canonical(out)"),
        ("hd-bet", "hd-bet", PARSE["hd-bet"], ""),
        ("hd-bet", "hd-bet", PARSE["hd-bet-v1"], ""),
        ("bet", "bet", PARSE["bet"], ""),
    ],
    ids=["synthstrip", "synthstrip-reoriented", "hd-bet-v2", "hd-bet-v1", "bet"],
)
def test_adapter_returns_the_tool_mask_on_the_input_grid(tmp_path, monkeypatch, method, exe, parse, post) -> None:
    fake_tool(tmp_path / "bin", exe, parse, post)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    image = scan()
    mask = external_brain_mask(method, image)
    assert mask.dtype == bool and mask.shape == SIZE
    assert mask.sum() > 100
    np.testing.assert_array_equal(mask, expected())
    assert image.GetSize() == SIZE  # the input image is untouched


def test_tool_failure_reports_the_last_stderr_line(tmp_path, monkeypatch) -> None:
    fake_tool(tmp_path / "bin", "bet", "sys.stderr.write('reading input\\nImage Exception : #22 :: Failed to read volume\\n\\n'); sys.exit(1)")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(AlzmriError, match=r"bet exited with status 1: Image Exception : #22 :: Failed to read volume$") as info:
        external_brain_mask("bet", scan())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("parse", "timeout_s", "message"),
    [
        ("time.sleep(30)", 1.0, "timed out after 1 s"),
        ("sys.exit(0)", 60, "wrote no mask"),
        ("inp, mask_path = argv[argv.index('-i') + 1], argv[argv.index('-m') + 1]", 60, "empty brain mask"),
    ],
    ids=["timeout", "no-mask", "empty-mask"],
)
def test_timeout_and_missing_or_empty_mask(tmp_path, monkeypatch, parse, timeout_s, message) -> None:
    post = "out = nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine)"
    fake_tool(tmp_path / "bin", "mri_synthstrip", parse, post)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(AlzmriError, match=message):
        external_brain_mask("synthstrip", scan(), timeout_s=timeout_s)


@pytest.mark.parametrize(("method", "exe"), [("synthstrip", "mri_synthstrip"), ("hd-bet", "hd-bet"), ("bet", "bet")])
def test_missing_tool_names_the_executable(tmp_path, monkeypatch, method, exe) -> None:
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(AlzmriError, match=f"'{exe}' on PATH") as info:
        external_brain_mask(method, scan())
    assert "--skull-strip template" in str(info.value) and "\n" not in str(info.value)
