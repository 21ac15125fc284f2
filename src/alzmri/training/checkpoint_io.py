"""Lightning checkpoint I/O that writes atomically (temp file + rename)."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from alzmri.utils.atomic import atomic_path

_SLACK = 64 << 20  # a checkpoint write that fails with less free space than this ran out of it


class AtomicCheckpointIO(TorchCheckpointIO):
    """A killed run never leaves a truncated ``.ckpt``: the old file stays until the new one is complete."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        with atomic_path(Path(path)) as tmp:
            try:
                super().save_checkpoint(checkpoint, tmp, storage_options)
            except RuntimeError as exc:  # torch.save reports a full disk without an errno
                if "write" in str(exc).lower() and shutil.disk_usage(tmp.parent).free < _SLACK:
                    raise OSError(errno.ENOSPC, f"no space left on device ({exc})") from exc
                raise
