"""QC checks that catch a failed brain mask without a human looking at it.

Per scan (:func:`mask_checks`, run at the end of the slow steps):

- **Volume.** The mask should hold the brain with its CSF, i.e. about the intracranial volume.
  Adult total intracranial volume is 1,100-1,900 ml for nearly everyone (means about 1,550 ml
  in men and 1,350 ml in women, SD about 120-140 ml: Buckner et al. 2004, *NeuroImage* 23:724,
  eTIV in 147 adults aged 18-93; Malone et al. 2015, *NeuroImage* 104:366). A mask that follows
  the brain tissue more tightly (the ``template`` method, or an atrophied brain) is smaller, so
  the range is ``BRAIN_ML_RANGE`` = 900-2,000 ml (the upper end about 3.5 SD above the male mean). The old 800-2,300 ml range let a 2,114 ml mask
  with scalp inside through.
- **Field-of-view border.** A mask touching the image border means a cut-off brain, or a mask
  that leaked into the neck.
- **Head surface.** On a scan with its skull on, the brain lies 8-15 mm under the head's outer
  surface (CSF, skull and scalp). The share of the mask's boundary that lies within
  ``SURFACE_MM`` of the air outside the head is ~0 for a brain and large for a mask grown into
  the scalp, the eyes or the face (:func:`surface_contact`). Not run for ``--skull-strip none``
  (the input is a brain already, whose surface *is* the mask's).
- **Registration similarity.** The ``template`` method reports the normalised correlation of
  the template brain with the registered scan (skull on, 3 mm); below ``MIN_REGISTRATION_NCC``
  the registration is suspect (real heads: 0.59-0.67; the old method's failed registrations on
  the same heads: below 0.3). The ``register`` step reports the same for the skull-stripped scan
  in MNI space, flagged below ``MIN_MNI_NCC``.
- **Agreement of two methods.** With ``--strip-check METHOD`` a second method runs and a Dice
  below ``MIN_METHOD_DICE`` between the two masks is flagged.

Across scans (:func:`longitudinal_warnings`): the intracranial volume of an adult does not
change between sessions (the brain shrinks, the skull does not), so a session whose mask volume
is more than half of ``LONGITUDINAL_TOLERANCE`` from its subject's median is flagged (two sessions
more than ``LONGITUDINAL_TOLERANCE`` apart are both flagged).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from alzmri.preprocessing.morphology import head_mask

BRAIN_ML_RANGE = (900.0, 2000.0)
SURFACE_MM = 4.0
MAX_SURFACE_CONTACT = 0.05
MIN_REGISTRATION_NCC = 0.45
MIN_MNI_NCC = 0.35  # the 'register' step: real heads 0.49-0.55 registered, 0.17-0.32 misregistered
MIN_METHOD_DICE = 0.90
LONGITUDINAL_TOLERANCE = 0.05


def masked_ncc(a: np.ndarray, b: np.ndarray, inside: np.ndarray) -> float:
    """Normalised correlation of two images over ``inside`` (0 when either is constant there)."""
    x, y = a[inside].astype(np.float64), b[inside].astype(np.float64)
    if x.size < 2 or x.std() == 0 or y.std() == 0:
        return 0.0
    return float(np.corrcoef(x, y)[0, 1])


def surface_contact(volume: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> float:
    """Share of the mask's boundary voxels within ``SURFACE_MM`` of the air around the head."""
    head = head_mask(volume) | mask
    depth = ndi.distance_transform_edt(np.pad(head, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    boundary = mask & ~ndi.binary_erosion(mask)
    if not boundary.any():
        return 0.0
    return float((depth[boundary] <= SURFACE_MM).mean())


def mask_checks(mask: np.ndarray, spacing: tuple[float, ...], qc: dict[str, Any], preview: np.ndarray | None = None,
                preview_mask: np.ndarray | None = None, preview_spacing: tuple[float, ...] | None = None) -> list[str]:
    """Check a brain mask on the scan's own grid (volume, border, head surface); record its values in ``qc``.

    Args:
        mask: boolean brain mask on the scan's grid.
        spacing: its voxel size (mm).
        qc: the scan's QC record so far (read: the skull-strip method; written: volume, coverage,
            surface contact).
        preview: the scan before skull stripping on a (possibly coarser) grid, for the surface
            check; None skips it.
        preview_mask: the brain mask on ``preview``'s grid.
        preview_spacing: voxel size of ``preview``.

    Returns:
        The warnings.
    """
    voxel_ml = float(np.prod(spacing)) / 1000.0
    brain_ml = float(mask.sum()) * voxel_ml
    qc["brain_ml"] = round(brain_ml, 1)
    qc["mask_coverage"] = round(float(mask.mean()), 4)
    warnings = []
    low, high = BRAIN_ML_RANGE
    if not low <= brain_ml <= high:
        warnings.append(f"mask volume {brain_ml:.0f} ml outside the adult intracranial range {low:.0f}-{high:.0f} ml")
    edges = [mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]]
    if any(e.any() for e in edges):
        warnings.append("brain mask touches the image border (cut-off field of view?)")
    if preview is not None and preview_mask is not None and preview_spacing is not None and qc.get("skull_strip_method") != "none":
        contact = surface_contact(preview, preview_mask, preview_spacing)
        qc["mask_surface_contact"] = round(contact, 4)
        if contact > MAX_SURFACE_CONTACT:
            warnings.append(f"{contact:.0%} of the mask's surface lies within {SURFACE_MM:g} mm of the head's surface (scalp, eyes or face inside?)")
    return warnings


def record_checks(qc: dict[str, Any]) -> list[str]:
    """Warnings from the values the slow steps recorded in ``qc``: registration similarity, method Dice."""
    warnings = []
    ncc = qc.get("skull_strip_registration_ncc")
    if isinstance(ncc, float) and ncc < MIN_REGISTRATION_NCC:
        warnings.append(f"template registration similarity {ncc:.2f} below {MIN_REGISTRATION_NCC:.2f} (misregistered?)")
    ncc = qc.get("registration_ncc")
    if isinstance(ncc, float) and ncc < MIN_MNI_NCC:
        warnings.append(f"MNI registration similarity {ncc:.2f} below {MIN_MNI_NCC:.2f} (misregistered?)")
    dice = qc.get("skull_strip_check_dice")
    if isinstance(dice, float) and dice < MIN_METHOD_DICE:
        warnings.append(f"skull-strip methods disagree: Dice {dice:.2f} with {qc.get('skull_strip_check_method')} (below {MIN_METHOD_DICE:.2f})")
    return warnings


def longitudinal_warnings(qc: pd.DataFrame, tolerance: float = LONGITUDINAL_TOLERANCE) -> dict[int, str]:
    """Row positions of ``qc`` whose mask volume departs from their subject's other sessions.

    For each participant with two or more sessions, a session is flagged when its volume is more
    than ``tolerance / 2`` from the participant's median (so two sessions that differ by more than
    ``tolerance`` are both flagged, and with three or more the odd one out is). Scans skull-stripped
    with ``none`` are left out (their mask is the brain, which may shrink).

    Returns:
        ``{row position: warning}``.
    """
    if "brain_ml" not in qc or "participant_id" not in qc:
        return {}
    volume = pd.to_numeric(qc["brain_ml"], errors="coerce")
    usable = volume.notna() & (qc.get("status", pd.Series("done", index=qc.index)) != "failed")
    if "skull_strip_method" in qc:
        usable &= qc["skull_strip_method"].astype(str) != "none"
    out: dict[int, str] = {}
    for _, rows in qc[usable].groupby("participant_id").groups.items():
        if len(rows) < 2:
            continue
        median = float(volume[rows].median())
        for row in rows:
            change = float(volume[row]) / median - 1.0
            if abs(change) > tolerance / 2:
                others = ", ".join(f"{qc.at[o, 'session_id']} {volume[o]:.0f} ml" for o in rows if o != row)
                out[qc.index.get_loc(row)] = (f"intracranial volume {volume[row]:.0f} ml is {change:+.1%} from this subject's median "
                                              f"({others}): a failed mask in one session?")
    return out
