"""Lightning checkpoint I/O that writes atomically (temp file + rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from alzmri.utils.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """A killed run never leaves a truncated ``.ckpt``: the old file stays until the new one is complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(Path(path)) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
