"""``alzmri split`` and ``alzmri audit``."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from alzmri.data.config import AuditConfig, SplitConfig
from alzmri.utils.errors import AlzmriError


def run_split(config: SplitConfig) -> Path:
    """Split the scans by subject, write the split folder and print per-class counts.

    Prints ``warning:`` lines for subjects whose diagnosis changed between sessions and for
    classes that a split has no scans of. The split is checked before anything is written.
    """
    from alzmri.data.splits import (
        diagnosis_change_warning,
        format_summary,
        missing_class_warnings,
        round_robin_split,
        split_summary,
        stratified_group_kfold,
        write_kfold,
        write_splits,
    )
    from alzmri.io.bids import load_scans

    scans = load_scans(config.source, labels=config.labels)
    _warn([diagnosis_change_warning(scans)])
    if config.method == "round-robin":
        splits = round_robin_split(scans, ratios=config.ratios, seed=config.seed)
        write_splits(splits, config.out)
        print(format_summary(split_summary(splits)))
        _warn(missing_class_warnings(splits))
    else:
        folds = stratified_group_kfold(scans, n_folds=config.folds, seed=config.seed)
        write_kfold(folds, config.out)
        for k, fold in enumerate(folds):
            print(f"fold {k}\n{format_summary(split_summary(fold))}")
        _warn(missing_class_warnings({f"fold {k} {name}": df for k, fold in enumerate(folds) for name, df in fold.items()}))
    print(f"splits written to {config.out}")
    return Path(config.out)


def _warn(messages: Iterable[str | None]) -> None:
    """Print each message (None skipped) as one ``warning:`` line."""
    for message in messages:
        if message:
            print(f"warning: {message}")


def run_audit(config: AuditConfig) -> None:
    from alzmri.data.audit import audit_split_dir

    leaks = audit_split_dir(config.split_dir)
    if leaks:
        names = "; ".join(f"subject {leak.participant_id} is in {' and '.join(leak.splits)}" for leak in leaks)
        raise AlzmriError(f"leaky split in {config.split_dir}: {names}")
    print(f"ok: no subject of {config.split_dir} appears in more than one split")
