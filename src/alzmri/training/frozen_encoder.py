"""``--freeze-encoder CKPT``: a fusion model's image encoder taken from an earlier image-only run, frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alzmri.io.checkpoint import read_checkpoint
from alzmri.models.weights import load_state
from alzmri.utils.errors import AlzmriError


def with_encoder_data(record: dict[str, Any] | None, checkpoint: Path) -> dict[str, Any] | None:
    """The fusion run's training-data record plus the scans the frozen encoder's run trained and was validated on.

    So ``evaluate`` refuses (or flags) test scans the encoder saw, as for any model.
    """
    earlier = read_checkpoint(checkpoint)["hparams"].get("training_data")
    if record is None or not earlier:
        return record
    merged = {**record}
    for part in ("train", "val"):
        if part in earlier:
            merged[part] = {key: list(record.get(part, {}).get(key, [])) + list(earlier[part].get(key, [])) for key in set(record.get(part, {})) | set(earlier[part])}
    return merged


def load_frozen_encoder(module: object, checkpoint: Path) -> list[str]:
    """Load ``checkpoint``'s image-model weights into ``module.model.image.model`` and freeze them.

    The earlier run must be of the fusion model's encoder (same architecture and settings); its
    classifier head is not used (the fusion model has its own).

    Raises:
        AlzmriError: the model has no image encoder, or the checkpoint is of another model.
    """
    image = getattr(getattr(module.model, "image", None), "model", None)  # type: ignore[attr-defined]
    if image is None:
        raise AlzmriError("--freeze-encoder needs a model with an image encoder (fusion_xattn, fusion_concat)")
    ckpt = read_checkpoint(checkpoint)
    encoder = module.model.image.encoder  # type: ignore[attr-defined]
    if ckpt["hparams"]["model_name"] != encoder:
        raise AlzmriError(f"--freeze-encoder {checkpoint} is a {ckpt['hparams']['model_name']} run; the fusion model's encoder is {encoder} (train it with 'alzmri train --model {encoder}')")
    keys = set(image.state_dict())
    load_state(image, {k: v for k, v in ckpt["state_dict"].items() if k in keys}, f"the image weights in {checkpoint}")
    for param in image.parameters():
        param.requires_grad_(False)
    return [f"image encoder {encoder} loaded from {checkpoint} and frozen ({sum(p.numel() for p in image.parameters()):,} parameters)"]
