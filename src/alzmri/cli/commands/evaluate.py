"""``alzmri evaluate`` and ``alzmri predict``."""

from __future__ import annotations

from typing import Any

from alzmri.cli.console import fmt, print_table
from alzmri.evaluation.config import EvaluateConfig, PredictConfig


def print_metrics(metrics: dict[str, Any]) -> None:
    """The headline metrics as a table."""
    rows = [
        ("scans / subjects", f"{metrics['n_scans']} / {metrics['n_subjects']}"),
        ("accuracy", fmt(metrics["accuracy"])),
        ("balanced accuracy", fmt(metrics["balanced_accuracy"])),
        ("macro F1", fmt(metrics["macro_f1"])),
    ]
    rows += [(f"AUC {c} vs rest", fmt(v)) for c, v in metrics["auc"].items()]
    print_table(f"{metrics['subset']} set", ["metric", "value"], rows)


def run_evaluate(config: EvaluateConfig) -> dict[str, Any]:
    from alzmri.evaluation.evaluate import evaluate

    metrics = evaluate(config)
    print_metrics(metrics)
    print(f"predictions, metrics.json, confusion_matrix.png, roc.png in {metrics['out']}")
    return metrics


def run_predict(config: PredictConfig) -> None:
    from alzmri.evaluation.evaluate import predict

    table = predict(config)
    print(table.to_string(index=False))
    print(f"predictions written to {config.out}")
