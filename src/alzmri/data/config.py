"""Configurations of the split and audit commands."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SplitConfig(BaseModel):
    """Subject-level train/val/test splits of a dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Path = Field(description="BIDS folder, manifest TSV/CSV, or slice cache (from 'alzmri import-slices' / 'alzmri slices').", json_schema_extra={"argument": True})
    out: Path = Field(description="Folder for the split TSVs and summary.", json_schema_extra={"argument": True})
    method: Literal["round-robin", "kfold"] = Field("round-robin", description="Round-robin train/val/test, or stratified group k-fold.")
    ratios: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="Train,val,test scan ratios (round-robin); every split with a ratio > 0 must get a subject, else the split is refused.")
    folds: int = Field(5, ge=3, le=20, description="Number of folds (kfold); every class needs at least this many subjects.")
    seed: int = Field(0, ge=0, description="Random seed for tie-breaking and fold shuffling.")
    labels: Path | None = Field(None, description="Labels TSV for a BIDS folder (default: its labels.tsv or participants.tsv).")
    level: Literal["subject", "slice"] = Field(
        "subject", description="Split by subject (always, for real results), or by slice (slice caches only: to demonstrate leakage; every result from it is marked invalid)."
    )


class AuditConfig(BaseModel):
    """Check a split folder for subjects that appear in more than one split."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split_dir: Path = Field(description="Split folder (train/val/test TSVs, or fold-* subfolders).", json_schema_extra={"argument": True})
