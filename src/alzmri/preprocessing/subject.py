"""Helpers shared by the preprocessing transforms: which image of a subject is the scan."""

from __future__ import annotations

import torchio as tio

from alzmri.utils.errors import AlzmriError

IMAGE_KEY = "image"
MASK_KEY = "brain_mask"


def main_image(subject: tio.Subject) -> tio.ScalarImage:
    """The scan: the ``image`` entry, or the subject's only intensity image.

    TorchIO wraps a bare ``nibabel`` image or array in a subject under its own key, so the
    transforms also work when called directly on those.
    """
    if IMAGE_KEY in subject:
        return subject[IMAGE_KEY]
    images = subject.get_images(intensity_only=True)
    if len(images) != 1:
        raise AlzmriError(f"expected one intensity image in the subject, found {len(images)}")
    return images[0]


def add_qc(subject: tio.Subject, **values: object) -> None:
    """Record QC values of a step in the subject (collected into the QC table)."""
    subject["qc"] = {**subject.get("qc", {}), **values}
