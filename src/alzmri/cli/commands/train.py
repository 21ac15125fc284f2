"""``alzmri train``."""

from __future__ import annotations

import json
from pathlib import Path

from alzmri.training.config import TrainConfig


def run(config: TrainConfig) -> Path:
    from alzmri.training.devices import is_rank_zero
    from alzmri.training.fit import fit

    run_dir = fit(config)
    if not is_rank_zero():  # under torchrun, rank 0 reports for all processes
        return run_dir
    result = json.loads((run_dir / "result.json").read_text())
    print(
        f"trained {result['epochs_trained']} epochs; best val accuracy {result['best_val_acc']:.3f}, "
        f"best val loss {result['best_val_loss']:.4f}\nrun folder: {run_dir}"
    )
    return run_dir
