"""``alzmri split`` and ``alzmri audit``."""

from __future__ import annotations

from pathlib import Path

from alzmri.data.config import AuditConfig, SplitConfig
from alzmri.utils.errors import AlzmriError


def run_split(config: SplitConfig) -> Path:
    from alzmri.data.splits import format_summary, round_robin_split, split_summary, stratified_group_kfold, write_kfold, write_splits
    from alzmri.io.bids import load_scans

    scans = load_scans(config.source, labels=config.labels)
    if config.method == "round-robin":
        splits = round_robin_split(scans, ratios=config.ratios, seed=config.seed)
        write_splits(splits, config.out)
        print(format_summary(split_summary(splits)))
    else:
        folds = stratified_group_kfold(scans, n_folds=config.folds, seed=config.seed)
        write_kfold(folds, config.out)
        for k, fold in enumerate(folds):
            print(f"fold {k}\n{format_summary(split_summary(fold))}")
    print(f"splits written to {config.out}")
    return Path(config.out)


def run_audit(config: AuditConfig) -> None:
    from alzmri.data.audit import audit_split_dir

    leaks = audit_split_dir(config.split_dir)
    if leaks:
        names = "; ".join(f"subject {leak.participant_id} is in {' and '.join(leak.splits)}" for leak in leaks)
        raise AlzmriError(f"leaky split in {config.split_dir}: {names}")
    print(f"ok: no subject of {config.split_dir} appears in more than one split")
