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
    acc, loss = result.get("best_val_acc"), result.get("best_val_loss")
    acc_text = "n/a" if acc is None else f"{acc:.3f} (epoch {result.get('best_val_acc_epoch')})"
    loss_text = "n/a" if loss is None else f"{loss:.4f} (epoch {result.get('best_val_loss_epoch')})"
    print(f"trained {result['epochs_trained']} epochs; best val accuracy {acc_text}, best val loss {loss_text}\nrun folder: {run_dir}")
    return run_dir
