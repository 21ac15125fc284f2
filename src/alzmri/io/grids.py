"""Moving arrays between voxel grids that share a world space (scanner RAS mm, or MNI).

The preprocessing records each scan's model-grid affines (``output_affine``: the grid's own
world, MNI after 'register'; ``scanner_affine``: the input scan's world), so a map made on the
model input can be put back on the scan it came from, a scan-space mask brought onto the model
grid, and an atlas onto a registered grid. All are the same operation: sample the source at the
world positions of the target's voxels (one affine, ``scipy.ndimage.affine_transform``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def resample_between(data: np.ndarray, source_affine: np.ndarray, target_shape: tuple[int, ...], target_affine: np.ndarray, order: int = 1) -> np.ndarray:
    """``data`` (on the grid of ``source_affine``) sampled at every voxel of the target grid.

    Args:
        data: 3-D source array.
        source_affine: its voxel-to-world matrix.
        target_shape: shape of the target grid.
        target_affine: the target's voxel-to-world matrix.
        order: interpolation order (0 nearest neighbour for labels and masks, 1 trilinear).

    Returns:
        A float32 array of ``target_shape``; zero outside the source.
    """
    voxel_to_voxel = np.linalg.solve(np.asarray(source_affine, dtype=float), np.asarray(target_affine, dtype=float))
    sampled = ndimage.affine_transform(np.asarray(data, dtype=np.float32), voxel_to_voxel[:3, :3], offset=voxel_to_voxel[:3, 3],
                                       output_shape=tuple(target_shape), order=order, mode="constant", cval=0.0)
    return np.asarray(sampled, dtype=np.float32)
