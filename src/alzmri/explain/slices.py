"""``explain`` for slice models: attribution maps of cached slices, overlays and a per-slice table.

Per slice, ``OUT/<participant>_<session>_<slice>.png``: the slice in gray, the positive part of the
map in colour inside the foreground (the slice's non-zero pixels: preprocessing sets the
background to 0), and the thresholded region outlined; and ``OUT/explain.tsv``: prediction,
the class explained, the share of positive evidence outside the foreground and its flag. The
methods are the 3D command's (MONAI's Grad-CAM, occlusion, gradients), run on 2D inputs; an
occluded window is pulled towards the background value 0. Regions, truth scoring and the
randomisation checks are volume-only for now.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from alzmri.data.dataset import select_scans
from alzmri.data.inputs import read_inputs, same_inputs
from alzmri.data.splits import read_split_dir
from alzmri.evaluation.predict import checkpoint_preprocess
from alzmri.explain.attribution import attribute
from alzmri.explain.brain import MOSTLY_OUTSIDE
from alzmri.explain.config import ExplainConfig
from alzmri.explain.thresholds import threshold_map
from alzmri.io.manifest import write_manifest
from alzmri.utils.errors import AlzmriError
from alzmri.utils.names import join_ids


def explain_slices(config: ExplainConfig, model: torch.nn.Module, hp: dict[str, Any], out: Path) -> dict[str, Any]:
    """Maps of the ``--data`` split's slices (at most ``--limit``); returns ``{"out", "table"}``."""
    from alzmri.explain.run import target_for

    unsupported = [flag for flag, used in (("--scan", bool(config.scan)), ("--regions", config.regions), ("--truth", config.truth is not None),
                                           ("--label-randomized", config.label_randomized is not None)) if used]  # fmt: skip
    if unsupported:
        raise AlzmriError(f"{', '.join(unsupported)} work with volume models only for now; explain a slice model's cached slices with --cache and --split")
    if not (config.cache and config.split):
        raise AlzmriError("a slice model explains cached slices: give --cache SLICE_CACHE --split SPLIT (and --data test|val|train)")
    cache, settings = read_inputs(config.cache)
    if not same_inputs(settings, checkpoint_preprocess(hp)):
        raise AlzmriError(f"slice cache {config.cache} was made differently from the model's training slices")
    splits = read_split_dir(config.split)
    if config.data not in splits:
        raise AlzmriError(f"split folder {config.split} has no {config.data!r} split (has: {', '.join(splits)})")
    rows = select_scans(cache, splits[config.data], config.data).head(config.limit)
    classes = list(hp["classes"])
    options: dict[str, Any] = {"layer": config.layer} if config.layer else {}
    if config.method == "occlusion":
        options["background"] = 0.0
        if config.occlusion_size is not None:
            options["mask_size"] = config.occlusion_size
    elif config.occlusion_size is not None:
        raise AlzmriError("--occlusion-size applies to --method occlusion only")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for row in rows.to_dict("records"):
        x = np.asarray(np.load(row["array"]), dtype=np.float32)
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(x)[None]), dim=1)[0].numpy()
        target = target_for(config.target, classes, row["diagnosis"], probs)
        amap = attribute(model, x, config.method, target=target, model_name=hp["model_name"], spatial_dims=2, **options)
        if config.smooth > 0:
            amap = ndimage.gaussian_filter(amap, config.smooth)
        positive = np.clip(amap, 0, None)
        brain = x[x.shape[0] // 2] != 0
        total = float(positive.sum())
        outside = float(positive[~brain].sum() / total) if total > 0 else 0.0
        region, threshold = threshold_map(positive, config.threshold, percentile=config.percentile, k=config.k, mask=brain) if total > 0 else (np.zeros_like(brain), 0.0)
        name = join_ids(row["participant_id"], row["session_id"], row["slice_id"], keep_empty=True)
        picture = out / f"{name}.png"
        plot_slice_map(x[x.shape[0] // 2], positive, brain, region, picture, f"{row['participant_id']} {row['slice_id']}: {classes[int(probs.argmax())]} "
                       f"(p {probs.max():.2f}); map for {classes[target]}, true {row['diagnosis']}", show_outside=outside > MOSTLY_OUTSIDE)  # fmt: skip
        records.append({"participant_id": row["participant_id"], "session_id": row["session_id"], "slice_id": row["slice_id"], "diagnosis": row["diagnosis"],
                        "predicted": classes[int(probs.argmax())], **{f"prob_{c}": round(float(p), 6) for c, p in zip(classes, probs, strict=True)},
                        "explained_class": classes[target], "method": config.method, "threshold": round(float(threshold), 6),
                        "region_pixels": int(np.asarray(region).sum()), "outside_share": round(outside, 4), "mostly_outside": outside > MOSTLY_OUTSIDE,
                        "empty": total == 0, "picture": picture.name})  # fmt: skip
    table = pd.DataFrame(records)
    write_manifest(table, out / "explain.tsv")
    return {"out": str(out), "table": table}


def plot_slice_map(image: np.ndarray, positive: np.ndarray, brain: np.ndarray, region: np.ndarray, path: Path, title: str, show_outside: bool = False) -> Path:
    """The slice in gray, the map's positive part in colour (foreground only, unless mostly outside), the region outlined."""
    import matplotlib.pyplot as plt

    from alzmri.utils.figures import save_figure

    fig, ax = plt.subplots(figsize=(3.4, 3.6))
    ax.imshow(image, cmap="gray")
    shown = positive if show_outside else np.where(brain, positive, 0.0)
    if shown.max() > 0:
        ax.imshow(np.ma.masked_where(shown <= 0, shown), cmap="hot", alpha=0.55, vmin=0, vmax=float(shown.max()))
        ax.contour(np.asarray(region, dtype=float), levels=[0.5], colors="yellow", linewidths=0.8)
    else:
        ax.text(0.5, 0.5, "empty map", color="white", ha="center", transform=ax.transAxes)
    ax.set_title(title + ("\nmost evidence outside the brain" if show_outside else ""), fontsize=6)
    ax.axis("off")
    return save_figure(fig, path)
