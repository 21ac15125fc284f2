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
        write_split_level,
        write_splits,
    )
    from alzmri.data.slices.store import is_slice_cache

    if is_slice_cache(config.source):
        scans = _slice_rows(config)
    else:
        if config.level == "slice":
            raise AlzmriError(f"--level slice splits a slice cache; {config.source} is not one (see 'alzmri import-slices' and 'alzmri slices')")
        from alzmri.io.bids import load_scans

        scans = load_scans(config.source, labels=config.labels)
    _warn([diagnosis_change_warning(scans)])
    if config.method == "round-robin":
        if config.level == "slice":
            from alzmri.data.splits import slice_level_split

            splits = slice_level_split(scans, ratios=config.ratios, seed=config.seed)
            print("warning: --level slice: slices of one subject are dealt to different splits; results from this split are leaky by design")
        else:
            splits = round_robin_split(scans, ratios=config.ratios, seed=config.seed)
        write_splits(splits, config.out)
        write_split_level(config.out, config.level)
        print(format_summary(split_summary(splits)))
        _warn(missing_class_warnings(splits))
    else:
        if config.level == "slice":
            raise AlzmriError("--level slice is for round-robin splits only")
        folds = stratified_group_kfold(scans, n_folds=config.folds, seed=config.seed)
        write_kfold(folds, config.out)
        for k, fold in enumerate(folds):
            print(f"fold {k}\n{format_summary(split_summary(fold))}")
        _warn(missing_class_warnings({f"fold {k} {name}": df for k, fold in enumerate(folds) for name, df in fold.items()}))
    print(f"splits written to {config.out}")
    return Path(config.out)


def _slice_rows(config: SplitConfig):
    """The rows a slice cache is split by: its scans (subject level) or its slices (slice level)."""
    from alzmri.data.slices.store import read_slice_cache

    slices, _ = read_slice_cache(config.source)
    unknown = int((~slices["subject_known"]).sum())
    if unknown and config.level == "subject":
        print(f"warning: {unknown} of {len(slices)} slices have no subject id; each is its own pseudo-subject, so this split cannot keep "
              "one person's slices together (audit it with 'alzmri slice-audit')")  # fmt: skip
    columns = ["participant_id", "session_id", "diagnosis", "subject_known"] + [c for c in ("age", "sex") if c in slices.columns]
    if config.level == "slice":
        return slices[columns[:2] + ["slice_id"] + columns[2:]]
    return slices.drop_duplicates(["participant_id", "session_id"])[columns].reset_index(drop=True)


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
