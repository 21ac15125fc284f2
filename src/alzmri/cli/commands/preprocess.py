"""``alzmri preprocess``: raw scans → cached model-ready arrays, with QC."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from alzmri.preprocessing.config import PreprocessConfig


class PreprocessCommand(PreprocessConfig):
    """PreprocessConfig plus input, output and execution options."""

    source: Path = Field(
        description="BIDS folder, or manifest TSV/CSV (diagnosis may be empty; path: a scan file in any supported format, or a DICOM series folder or zip).",
        json_schema_extra={"argument": True},
    )
    out: Path = Field(description="Cache folder (created; re-running resumes and recomputes only what changed).", json_schema_extra={"argument": True})
    labels: Path | None = Field(None, description="Labels TSV for a BIDS folder (default: its labels.tsv or participants.tsv).")
    workers: int = Field(0, ge=0, description="Worker processes (0 = one per CPU core).", json_schema_extra={"short": "-j"})
    shard: str | None = Field(
        None,
        description="Process only part I of N of the scan list (I = 1..N), e.g. --shard $SLURM_ARRAY_TASK_ID/8 in a SLURM "
        "array of 8 tasks writing into one cache; the last task to end writes the complete manifest and QC page.",
    )
    scheduler: str | None = Field(None, description="Run the scans on a Dask cluster: the scheduler's address, e.g. tcp://10.0.0.5:8786.")
    fail_on_qc: bool = Field(False, description="Treat scans with a QC warning as failures: left out of the manifest, exit code 2.")
    progress: bool = Field(True, description="Show a progress bar.")


def run(config: PreprocessCommand) -> Path:
    from alzmri.io.bids import load_scans
    from alzmri.preprocessing.runner import parse_shard, preprocess_scans

    shard = parse_shard(config.shard)
    scans = load_scans(config.source, labels=config.labels, labeled=False)
    settings = PreprocessConfig(**config.model_dump(include=set(PreprocessConfig.model_fields)))
    manifest = preprocess_scans(scans, config.out, settings, workers=config.workers, progress=config.progress, shard=shard,
                                scheduler=config.scheduler, fail_on_qc=config.fail_on_qc)
    print(f"{len(manifest)} scans cached in {config.out} ({settings.size}³, {settings.dtype}); manifest {Path(config.out) / 'manifest.tsv'}")
    return Path(config.out)
