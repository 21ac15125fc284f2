"""MLflow for progression runs: parameters once, G/D losses and validation numbers per epoch, sample grids.

The store is ``sqlite:///OUT/mlflow.db`` unless a tracking URI is given (offline); one MLflow run
per run folder, so a resumed run continues its MLflow run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from alzmri.utils.atomic import atomic_write_text

EXPERIMENT = "alzmri-progression"


class ProgressionTracker:
    """Log one progression run to MLflow (or nowhere, when disabled)."""

    def __init__(self, enabled: bool, out: Path, run_dir: Path, uri: str | None = None) -> None:
        self.client = None
        self.run_id: str | None = None
        if not enabled:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow.tracking import MlflowClient

        for name in ("alembic", "mlflow"):
            logging.getLogger(name).setLevel(logging.ERROR)
        out = Path(out).resolve()
        self.client = MlflowClient(tracking_uri=uri or f"sqlite:///{out / 'mlflow.db'}")
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT, artifact_location=(out / "mlartifacts").as_uri())
        id_file = run_dir / "mlflow_run_id.txt"
        stored = id_file.read_text().strip() if id_file.is_file() else None
        if stored and self._exists(stored):
            self.run_id = stored
        else:  # first start, or a store that no longer holds the run (another --tracking-uri, a deleted mlflow.db)
            self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name).info.run_id
            atomic_write_text(id_file, self.run_id + "\n")

    def _exists(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def params(self, values: dict[str, Any]) -> None:
        """Log the run's settings once (MLflow refuses to change a logged parameter)."""
        if self.client is None:
            return
        logged = self.client.get_run(self.run_id).data.params
        for key, value in values.items():
            if key not in logged:
                self.client.log_param(self.run_id, key, str(value)[:500])

    def metrics(self, values: dict[str, float], epoch: int) -> None:
        if self.client is not None:
            for key, value in values.items():
                self.client.log_metric(self.run_id, key, float(value), step=epoch)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if self.client is not None:
            self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def finish(self) -> None:
        if self.client is not None:
            self.client.set_terminated(self.run_id)
