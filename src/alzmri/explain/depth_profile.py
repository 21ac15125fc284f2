"""Where along each axis the positive evidence of an attribution map lies.

A model that reads anatomy should concentrate its evidence at the depth of the structures
that change (hippocampi and temporal horns sit low and in the middle of the coronal range);
one that reads the field of view or a scanner artefact tends to pile evidence up at the
first or last slices. The profile makes that visible in three small curves.

Axis names assume arrays in RAS orientation (what the ``reorient`` preprocessing step
produces): index grows toward the subject's right, anterior and superior.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from alzmri.explain.thresholds import _as_map  # noqa: E402
from alzmri.utils.errors import AlzmriError  # noqa: E402
from alzmri.utils.figures import save_figure  # noqa: E402

AXIS_NAMES: tuple[str, str, str] = (
    "sagittal (x: left→right)",
    "coronal (y: posterior→anterior)",
    "axial (z: inferior→superior)",
)


def depth_profile(attribution: np.ndarray) -> dict[str, np.ndarray]:
    """Share of the positive attribution in each slice, along each axis.

    With ``P = max(attribution, 0)``, the profile along axis ``a`` is
    ``p_a[i] = sum(P[slice i along a]) / sum(P)``, so each profile sums to 1. When the map
    has no positive value the profiles are undefined and returned filled with NaN.

    Args:
        attribution: 3-D real-valued map in RAS orientation, finite everywhere.

    Returns:
        ``{AXIS_NAMES[a]: p_a}`` for axes 0, 1, 2, each a float64 array of length
        ``attribution.shape[a]``, in axis order.

    Raises:
        AlzmriError: for a map that is not 3-D or has non-finite values.
    """
    positive = np.clip(_as_map(attribution), 0.0, None)
    total = float(positive.sum())
    out = {}
    for axis, name in enumerate(AXIS_NAMES):
        others = tuple(a for a in range(3) if a != axis)
        per_slice = positive.sum(axis=others)
        out[name] = per_slice / total if total > 0 else np.full(per_slice.shape, np.nan)
    return out


def plot_depth_profile(profiles: Mapping[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """Plot depth profiles as small side-by-side panels (one per axis) and write a PNG.

    Each panel shows the share of positive attribution per slice (y) against the slice
    index (x), with a dotted line at the uniform share ``1 / n_slices``.

    Args:
        profiles: axis name -> 1-D profile, as returned by :func:`depth_profile`.
        path: output PNG path (written atomically).
        title: figure title.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        AlzmriError: when ``profiles`` is empty or a profile is not 1-D.
    """
    if not profiles:
        raise AlzmriError("no depth profiles to plot")
    fig, axes = plt.subplots(1, len(profiles), figsize=(3.2 * len(profiles), 2.6), squeeze=False)
    for i, (ax, (name, profile)) in enumerate(zip(axes[0], profiles.items())):
        values = np.asarray(profile, dtype=float)
        if values.ndim != 1:
            raise AlzmriError(f"depth profile {name!r} must be 1-D, got shape {values.shape}")
        ax.plot(np.arange(values.size), values, color="tab:red", lw=1.5)
        ax.fill_between(np.arange(values.size), values, color="tab:red", alpha=0.2)
        if values.size:
            ax.axhline(1.0 / values.size, color="grey", ls=":", lw=1)
        ax.set_xlabel(f"slice, {name}")
        if i == 0:
            ax.set_ylabel("share of positive attribution")
        ax.set_xlim(0, max(values.size - 1, 1))
        ax.set_ylim(bottom=0)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, Path(path))
