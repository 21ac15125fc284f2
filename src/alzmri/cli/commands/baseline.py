"""``alzmri baseline``."""

from __future__ import annotations

from typing import Any

from alzmri.cli.commands.evaluate import print_metrics
from alzmri.evaluation.config import BaselineConfig


def describe_search(search: dict[str, Any]) -> str:
    """The chosen hyper-parameters and their inner cross-validation score, in one line."""
    best = search["best_params"]
    n = search["n_components"]
    size = f"{best['components']:.0%} of the variance, {n} component{'s' if n != 1 else ''}" if best["components"] < 1 else f"{n} components"
    return (
        f"chosen on {search['n_train_subjects']} training subjects ({len(search['inner_folds'])} inner folds): "
        f"PCA to {size}, C = {best['C']:g}; "
        f"inner-CV {search['scoring'].replace('_', ' ')} {search['inner_cv_score']:.3f} ± {search['inner_cv_sd']:.3f} "
        f"({search['n_voxels']} brain voxels)"
    )


def run(config: BaselineConfig) -> dict[str, Any]:
    from alzmri.evaluation.baseline import baseline

    result = baseline(config)
    print(f"{result['model']}: {describe_search(result['search'])}")
    print_metrics(result)
    print(f"run folder: {result['run']} (predictions.tsv, report.html and metrics.json in {result['out']})")
    print(f"compare with a network on the same split: alzmri compare RUN {result['run']}")
    return result
