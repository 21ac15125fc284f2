"""Skull stripping and QC on real raw T1w heads: mask volume, Dice between methods, seconds per step.

Usage (from the repository root, after ``make setup``; needs the real data beside the project)::

    .venv/bin/python benchmarks/real_scans.py                       # ../shared/data/real-t1
    .venv/bin/python benchmarks/real_scans.py --data DIR --methods deepbet,template

Scans: the Siemens Trio MPRAGE (a DICOM series folder, 176 x 256 x 256, 1 mm) and the two IXI heads
(2 mm) of ``real-t1/`` (see its README). Each method runs the default pipeline (reorient, 1 mm
resampling, N4, skull stripping, crop, 128³ resize, z-score) through ``preprocess_scans`` with one
worker process (torch and SimpleITK limited to one thread), so ``seconds_total`` is the single-core
cost of a scan. Dice compares each method's mask with the first method's, on the common 1 mm grid.
Writes, under ``--out`` (default ``benchmarks/results/real_scans``): ``real_scans.json``, every
scan's QC picture per method, and ``siemens_masks.png`` (the first two methods' masks on the
Siemens scan, one row each). The Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.preprocessing.config import PreprocessConfig
from alzmri.preprocessing.pipeline import Intermediate
from alzmri.preprocessing.qc_figure import save_qc_figure
from alzmri.preprocessing.runner import preprocess_scans

ROOT = Path(__file__).resolve().parents[1]
SCANS = {  # participant: path under the data folder
    "sub-siemens": "dicom-siemens-trio/t1_MPRAGEcr_noGRAPPA_19",
    "sub-IXI012": "ixi-2mm/IXI012-HH-1211_T1.nii.gz",
    "sub-IXI015": "ixi-2mm/IXI015-HH-1258_T1.nii.gz",
}
STEPS = ("reorient", "resample", "n4", "skull_strip", "crop", "resize", "normalize")


def _full_mask(stage: Intermediate, reference: Intermediate) -> tuple[np.ndarray, np.ndarray]:
    """Both stages' masks (cropped to their own brain box) placed on one common voxel grid."""
    offset_a = np.rint(np.linalg.solve(reference.affine[:3, :3], stage.affine[:3, 3] - reference.affine[:3, 3])).astype(int)
    lo = np.minimum(offset_a, 0)
    hi = np.maximum(offset_a + np.array(stage.mask.shape), np.array(reference.mask.shape))
    a = np.zeros(hi - lo, dtype=bool)
    b = np.zeros(hi - lo, dtype=bool)
    sa = tuple(slice(o - l, o - l + n) for o, l, n in zip(offset_a, lo, stage.mask.shape, strict=True))
    sb = tuple(slice(-l, -l + n) for l, n in zip(lo, reference.mask.shape, strict=True))
    a[sa] = stage.mask > 0
    b[sb] = reference.mask > 0
    return a, b


def format_check(nifti: Path, folder: Path) -> list[dict[str, object]]:
    """Write a real head in every format the readers take; read each back with ``load_scan``.

    Analyze and NIfTI pairs are written as int16 (as SPM writes them), the others as float32;
    the difference is taken against the values each file holds and, for Analyze 7.5 (which
    stores voxel sizes and an origin but no rotation), against the affine nibabel reads from the
    header. MINC is left out: the only MINC writer here is SimpleITK's, which (before ITK's
    2024 fix) writes ITK's LPS coordinates where MINC expects RAS; the reader is checked against
    nibabel's MINC2 reference file in ``tests/test_formats.py`` instead.
    """
    import nibabel as nib
    import SimpleITK as sitk

    from alzmri.io.nifti import load_scan

    reference, _ = load_scan(nifti)
    data = np.asarray(reference.dataobj, dtype=np.float32)
    whole = np.rint(data).astype(np.int16)
    as_itk = sitk.ReadImage(str(nifti), sitk.sitkFloat32)
    writers = {  # name: (writer, the values the file holds)
        "analyze.hdr": (lambda p: nib.save(nib.AnalyzeImage(whole, reference.affine), str(p)), whole),
        "pair.img": (lambda p: nib.save(nib.Nifti1Pair(whole, reference.affine), str(p)), whole),
        "nifti2.nii.gz": (lambda p: nib.save(nib.Nifti2Image(data, reference.affine), str(p)), data),
        "freesurfer.mgz": (lambda p: nib.save(nib.MGHImage(data, reference.affine), str(p)), data),
        "nrrd.nrrd": (lambda p: sitk.WriteImage(as_itk, str(p)), data),
        "metaimage.mha": (lambda p: sitk.WriteImage(as_itk, str(p)), data),
    }
    rows = []
    for name, (write, held) in writers.items():
        path = folder / name
        write(path)
        image, _ = load_scan(path)
        expected = nib.load(str(path)).affine if name.startswith("analyze") else reference.affine
        rows.append({"format": name, "shape": "x".join(map(str, image.shape)),
                     "max_voxel_difference": float(np.abs(np.asarray(image.dataobj) - held).max()),
                     "max_affine_difference_mm": round(float(np.abs(image.affine - expected).max()), 6)})
    return rows


def _stage(cache: Path, participant: str) -> Intermediate:
    (path,) = sorted((cache / "stages").glob(f"{participant}_ses-01.*.npz"))
    return Intermediate.load(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "real-t1")
    parser.add_argument("--methods", default="deepbet,template")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_scans")
    args = parser.parse_args()
    methods = args.methods.split(",")
    missing = [p for p in SCANS.values() if not (args.data / p).exists()]
    if missing:
        raise SystemExit(f"error: real scans not found under {args.data} (missing {missing[0]}); pass --data")
    scans = pd.DataFrame([{"participant_id": p, "session_id": "ses-01", "diagnosis": "", "path": str(args.data / rel)} for p, rel in SCANS.items()])
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alzmri-real-") as tmp:
        caches = {}
        for method in methods:
            cache = Path(tmp) / method
            caches[method] = cache
            config = PreprocessConfig(steps=STEPS, skull_strip=method)
            preprocess_scans(scans, cache, config, workers=1, progress=False)
            qc = pd.read_csv(cache / "qc.tsv", sep="\t", dtype={"participant_id": str, "warnings": str}, keep_default_na=False)
            for record in qc.to_dict("records"):
                picture = args.out / method / f"{record['participant_id']}.png"
                picture.parent.mkdir(exist_ok=True)
                shutil.copyfile(cache / "qc" / f"{record['participant_id']}_ses-01.png", picture)
                row = {"scan": record["participant_id"], "method": method, "brain_ml": record["brain_ml"],
                       "surface_contact": record.get("mask_surface_contact", ""),
                       "registration_ncc": record.get("skull_strip_registration_ncc", ""),
                       "warnings": record["warnings"], "seconds_total": record["seconds_total"]}
                row.update({k: record[k] for k in record if k.startswith("seconds_") and k != "seconds_total"})
                rows.append(row)
        first = methods[0]
        for row in rows:
            a, b = _full_mask(_stage(caches[row["method"]], row["scan"]), _stage(caches[first], row["scan"]))
            row[f"dice_vs_{first}"] = round(2.0 * float((a & b).sum()) / float(a.sum() + b.sum()), 4)
        if len(methods) >= 2:
            one, two = (_stage(caches[m], "sub-siemens") for m in methods[:2])
            save_qc_figure(args.out / "siemens_masks.png", before=one.preview.astype(np.float32), after=two.preview.astype(np.float32),
                           before_mask=one.preview_mask > 0, after_mask=two.preview_mask > 0,
                           title="Siemens Trio MPRAGE (raw DICOM, 1 mm): brain masks",
                           row_labels=(f"{methods[0]}\n{one.qc['brain_ml']:.0f} ml", f"{methods[1]}\n{two.qc['brain_ml']:.0f} ml"))
        formats = format_check(args.data / SCANS["sub-IXI012"], Path(tmp))
    (args.out / "real_scans.json").write_text(json.dumps({"masks": rows, "formats": formats}, indent=1) + "\n")
    table = pd.DataFrame(rows)
    columns = ["scan", "method", "brain_ml", f"dice_vs_{first}", "surface_contact", "registration_ncc",
               "seconds_n4", "seconds_skull_strip", "seconds_total", "warnings"]
    table = table[[c for c in columns if c in table]]
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for values in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in values) + " |")
    print()
    for row in formats:
        print(row)


if __name__ == "__main__":
    main()
