"""Where the brain is on the model grid, and how much of a map's evidence lies outside it.

A preprocessed volume is a brain on a constant background: skull stripping sets everything
outside the brain mask to 0, ``normalize`` then maps that 0 to one value (``−mean / sd`` of the
brain in a z-scored image, e.g. −3.5). The brain is *not* "every voxel above the minimum":
the cubic B-spline resize over- and undershoots at the brain's edge, so a few voxels next to
the brain lie below the background (background −3.49, minimum −4.07 on real scans), and then
every background voxel is above the minimum and the whole field of view counts as brain.

The mask therefore comes from the preprocessing when it is there: the cache stores each scan's
brain mask on the model grid (``masks/`` in the cache, resized with nearest neighbours, so
ringing cannot move it). Without one (caches made before masks were stored, pipelines without
skull stripping) :func:`alzmri.preprocessing.brain_mask.estimate_brain_mask` finds the background as the volume's most frequent
value and takes the voxels that differ from it by more than a tolerance (largest connected
component, holes filled).

Every map then reports the share of its positive evidence outside the brain
(:func:`evidence_location`): a map whose evidence lies mostly outside (more than
:data:`MOSTLY_OUTSIDE` of it, and denser there than inside the brain) points at a shortcut or
an artefact (background, field-of-view edges, occlusion fill), not at anatomy. The density
condition matters where the brain fills a small part of the grid: a diffuse map (coarse
Grad-CAM, gradients spread by the receptive fields) then puts most of its mass outside just
because most voxels are outside, which is not evidence *located* outside. A map without any positive value is *empty*
(Grad-CAM's ReLU kills a map whose class score only decreases with the layer's activations),
reported in words (:data:`EMPTY_MAP`), not as a share of nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from alzmri.preprocessing.brain_mask import estimate_brain_mask
from alzmri.utils.errors import AlzmriError

EMPTY_MAP = "no positive evidence: the map is empty"
MOSTLY_OUTSIDE = 0.5  # share of the positive evidence outside the brain above which a map is flagged


def scan_brain_mask(volume: np.ndarray, stored: np.ndarray | None) -> tuple[np.ndarray, str]:
    """The brain mask a scan's map is judged against, and where it came from.

    Args:
        volume: the model input.
        stored: the preprocessing's mask on the model grid, or None.

    Returns:
        ``(mask, source)``: the stored mask and ``"preprocessing"`` when one of the volume's
        shape with some brain in it is given, else :func:`estimate_brain_mask` and ``"estimated"``.
    """
    if stored is not None and np.shape(stored) == np.shape(volume) and np.any(stored):
        return np.asarray(stored, dtype=bool), "preprocessing"
    return estimate_brain_mask(volume), "estimated"


def evidence_location(attribution: np.ndarray, brain: np.ndarray) -> dict[str, Any]:
    """Whether a map has positive evidence at all, and which share of it lies outside the brain.

    With ``P = max(attribution, 0)``: ``outside_brain_share = sum(P[~brain]) / sum(P)`` (NaN for
    an empty map), ``outside_brain_volume_share`` the share of the grid outside the brain (what a
    map spread evenly over the grid would put outside), ``mostly_outside_brain`` whether the share
    exceeds both :data:`MOSTLY_OUTSIDE` and ``outside_brain_volume_share`` (more than half of the
    evidence outside, and denser there than inside), ``empty`` whether ``sum(P)`` is 0.

    Raises:
        AlzmriError: when the map and the mask differ in shape.
    """
    positive = np.clip(np.asarray(attribution, dtype=np.float64), 0.0, None)
    brain = np.asarray(brain, dtype=bool)
    if positive.shape != brain.shape:
        raise AlzmriError(f"attribution map shape {positive.shape} differs from the brain mask's {brain.shape}")
    total = float(positive.sum())
    share = float(positive[~brain].sum() / total) if total > 0 else float("nan")
    even = float(1.0 - brain.mean())
    return {
        "empty": not total > 0,
        "outside_brain_share": share,
        "outside_brain_volume_share": even,
        "mostly_outside_brain": bool(total > 0 and share > MOSTLY_OUTSIDE and share > even),
    }


def describe_evidence(evidence: dict[str, Any], top_share: float | None) -> str:
    """One line in words: the top region's share of the in-brain map and the share outside the brain.

    Args:
        evidence: from :func:`evidence_location`.
        top_share: the strongest thresholded region's share of the map inside the brain (None
            when no region survived).
    """
    if evidence["empty"]:
        return EMPTY_MAP
    held = f"top region holds {top_share:.0%} of the map" if top_share is not None and np.isfinite(top_share) else "no positive evidence inside the brain"
    outside = f"{evidence['outside_brain_share']:.0%} of the evidence outside the brain"
    if evidence["mostly_outside_brain"]:
        return f"{held}; {outside}: MOSTLY OUTSIDE THE BRAIN (a shortcut or an artefact, not anatomy)"
    return f"{held}; {outside}"


def outside_note(evidence: dict[str, Any]) -> str:
    """The warning an overlay carries for a map flagged by :func:`evidence_location` ('' otherwise)."""
    if not evidence["mostly_outside_brain"]:
        return ""
    return (f"{evidence['outside_brain_share']:.0%} of the positive evidence lies outside the brain (map shown unmasked): "
            "a shortcut or an artefact, not anatomy")
