"""``alzmri train-progression``, ``alzmri progress`` and ``alzmri evaluate-progression``."""

from __future__ import annotations

import json
from pathlib import Path

from alzmri.evaluation.config import EvaluateProgressionConfig
from alzmri.generate.config import ProgressConfig, ProgressionConfig


def run_train(config: ProgressionConfig) -> Path:
    from alzmri.generate.fit import train_progression

    run_dir = train_progression(config)
    result = json.loads((run_dir / "result.json").read_text())
    print(f"trained {result['epochs']} epochs ({result['pairing']}: {' → '.join(result['stages'])})\nrun folder: {run_dir}\n"
          f"  samples: {run_dir / 'samples'}  (one PNG per epoch)\n"
          f"  next:    alzmri evaluate-progression {run_dir} --cache {config.cache} --split {config.split} --classifier CLASSIFIER.ckpt")
    return run_dir


def run_progress(config: ProgressConfig) -> Path:
    from alzmri.evaluation.progression.progress import progress

    out = progress(config)
    print(f"progression of {config.scan.name}: {out}")
    return out


def run_evaluate(config: EvaluateProgressionConfig) -> dict:
    from alzmri.evaluation.progression.evaluate import evaluate_progression

    summary = evaluate_progression(config)
    print((Path(summary["out"]) / "report.md").read_text())
    print(f"written to {summary['out']} (report.md, summary.json, pairs.tsv, chain.tsv, chain_examples.png, predicted_stage.png)")
    return summary
