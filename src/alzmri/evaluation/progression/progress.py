"""``alzmri progress RUN SCAN``: the image at every later stage, the change maps and a GIF, for one input.

The input must be prepared as the run's training data was, and it is checked:

* an image file (PNG, JPEG, ...) for a run trained on imported slices: prepared exactly as
  ``alzmri import-slices`` prepared them (padded square, resized, z-scored);
* a cached array (``.npy`` in the ``arrays`` folder of a slice or preprocessing cache): the cache's
  settings must be the run's;
* a raw volume (NIfTI, ...) for a run trained on volumes: preprocessed with the run's settings.

Outputs (in ``OUT``): ``stage-<k>-<stage>.npy`` (the cache's scale; ``k`` 0 is the input),
``change-<stage>.npy`` (generated − input), ``chain.png`` (the chain and the change maps),
``chain.gif`` and ``progress.json``; for volumes also ``stage-<k>-<stage>.nii.gz``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from alzmri.data.inputs import read_inputs, stored_inputs
from alzmri.data.slices.store import SliceSetConfig
from alzmri.evaluation.progression.evaluate import check_inputs
from alzmri.generate.config import ProgressConfig
from alzmri.generate.data import from_unit, read_array, to_unit
from alzmri.generate.run import ProgressionRun, load_run
from alzmri.generate.samples import chain_figure, chain_gif
from alzmri.io.images import is_image_file
from alzmri.utils.atomic import atomic_path, atomic_write_text
from alzmri.utils.errors import AlzmriError


def read_input(run: ProgressionRun, scan: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The scan as the run's generators take it (``(C, *S)`` on the cache's scale) and its grid affine when known.

    Raises:
        AlzmriError: a missing file, an input prepared differently from the run's data, or of another size.
    """
    scan = Path(scan)
    if not scan.is_file():
        raise AlzmriError(f"input {scan} does not exist")
    settings = stored_inputs(run.inputs, "the progression run")
    affine = None
    if scan.suffix == ".npy":
        cache = scan.parent.parent
        if scan.parent.name != "arrays" or not ((cache / "slices.json").is_file() or (cache / "preprocess.json").is_file()):
            raise AlzmriError(f"{scan} is not inside a cache's arrays/ folder, so how it was prepared is unknown; pass an array of a slice or preprocessing cache made like the run's")
        _, inputs = read_inputs(cache)
        check_inputs(run, inputs, f"cache {cache}")
        array = read_array(str(scan), run.spatial_dims)
    elif is_image_file(scan):
        if not isinstance(settings, SliceSetConfig) or settings.origin != "images":
            raise AlzmriError(f"the run learned from {'slices cut from volumes' if isinstance(settings, SliceSetConfig) else 'volumes'}, not image files: "
                              "pass a .npy from a cache made like the run's (alzmri slices), or the raw volume for a volume run")  # fmt: skip
        from alzmri.data.slices.from_images import prepare_image
        from alzmri.io.images import read_image

        array = prepare_image(read_image(scan)[0], settings.size)
    else:
        if isinstance(settings, SliceSetConfig):
            raise AlzmriError(f"the run learned from 2D slices: pass an image file or a slice cache's .npy, not {scan.name}")
        from alzmri.preprocessing.pipeline import output_affine, preprocess_image

        volume, qc = preprocess_image(scan, settings)
        array, affine = volume[None].astype(np.float32), output_affine(qc)
    if tuple(array.shape) != tuple(run.shape):
        raise AlzmriError(f"{scan.name} is {'x'.join(map(str, array.shape))}, the run's images are {'x'.join(map(str, run.shape))} (channels x size)")
    return array, affine


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, array.astype(np.float32))


def progress(config: ProgressConfig) -> Path:
    """Run the chain on one input and write its outputs; returns the output folder."""
    run = load_run(config.run)
    start = run.stage_index(config.stage)
    array, affine = read_input(run, config.scan)
    unit = to_unit(array, run.scale)[None]
    generated = [g[0] for g in run.chain(unit, start=start)]
    names = run.stages[start:]
    out = Path(config.out) if config.out else run.folder / f"progress-{config.scan.name.split('.')[0]}"
    out.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"input": str(config.scan), "run": str(run.path), "start_stage": names[0], "stages": names, "files": []}
    images = [unit[0], *generated]
    for k, (image, stage) in enumerate(zip(images, names, strict=True)):
        path = out / f"stage-{k}-{stage}.npy"
        _save_npy(path, from_unit(image, run.scale))
        record["files"].append(path.name)
        if k:
            change = out / f"change-{stage}.npy"
            _save_npy(change, from_unit(image - unit[0], run.scale))
            record["files"].append(change.name)
            record.setdefault("mean_abs_change", {})[stage] = float(np.abs(image - unit[0]).mean() * run.scale)
        if affine is not None:
            import nibabel as nib

            nifti = out / f"stage-{k}-{stage}.nii.gz"
            with atomic_path(nifti) as tmp:  # the temporary name keeps the .nii.gz suffix nibabel needs
                nib.save(nib.Nifti1Image(from_unit(image[0], run.scale), affine), tmp)
            record["files"].append(nifti.name)
    chain_figure([{"name": config.scan.name, "start": start, "images": images}], run.stages, out / "chain.png", title=f"{config.scan.name}: generated later stages")
    chain_gif(images, names, out / "chain.gif")
    record["files"] += ["chain.png", "chain.gif"]
    atomic_write_text(out / "progress.json", json.dumps(record, indent=2) + "\n")
    return out
