"""``alzmri preprocess``: raw scans → cached model-ready arrays, with QC."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from alzmri.preprocessing.config import PreprocessConfig


class PreprocessCommand(PreprocessConfig):
    """PreprocessConfig plus input, output and execution options."""

    source: Path = Field(
        description="BIDS folder, or manifest TSV/CSV (diagnosis may be empty; path may be a NIfTI file or a DICOM series folder).",
        json_schema_extra={"argument": True},
    )
    out: Path = Field(description="Cache folder (created; re-running resumes and recomputes only what changed).", json_schema_extra={"argument": True})
    labels: Path | None = Field(None, description="Labels TSV for a BIDS folder (default: its labels.tsv or participants.tsv).")
    workers: int = Field(0, ge=0, description="Worker processes (0 = one per CPU core).", json_schema_extra={"short": "-j"})
    progress: bool = Field(True, description="Show a progress bar.")


def run(config: PreprocessCommand) -> Path:
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.runner import preprocess_scans

    scans = load_scans(config.source, labels=config.labels, labeled=False)
    settings = PreprocessConfig(**config.model_dump(include=set(PreprocessConfig.model_fields)))
    manifest = preprocess_scans(scans, config.out, settings, workers=config.workers, progress=config.progress)
    print(f"{len(manifest)} scans cached in {config.out} ({settings.size}³, {settings.dtype}); manifest {Path(config.out) / 'manifest.tsv'}")
    return Path(config.out)
