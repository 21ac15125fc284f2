"""``alzmri convert``: DICOM series → BIDS-like NIfTI plus a manifest.

Only series classified as T1w are converted; the others are listed as skipped, with their kind
and reason, in ``conversion.tsv``. pydicom and ITK/GDCM warnings go to ``conversion.log``, not to
the terminal.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class ConvertCommand(BaseModel):
    """Where to read DICOM, where to write NIfTI, and which series to accept."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dicom_dir: Path = Field(description="Folder searched recursively for DICOM files (never modified).", json_schema_extra={"argument": True})
    out: Path = Field(
        description="Output folder: sub-*/ses-*/anat NIfTI, conversion.tsv, manifest.tsv, conversion.log (re-running resumes).",
        json_schema_extra={"argument": True},
    )
    min_slices: int = Field(10, ge=1, description="Skip T1w series with fewer slices than this.")
    progress: bool = Field(True, description="Show a progress bar.")


def run(config: ConvertCommand) -> Path:
    """Convert, print a one-line summary of the outcomes, and return the manifest's path."""
    from alzmri.io.dicom import convert_dicom_dir

    table = convert_dicom_dir(config.dicom_dir, config.out, min_slices=config.min_slices, progress=config.progress)
    counts = table["status"].value_counts()
    resumed = int((table["reason"] == "already converted").sum())
    parts = [f"converted {counts.get('converted', 0)} series" + (f" ({resumed} already present)" if resumed else "")]
    for status in ("skipped", "failed"):
        rows = table[table["status"] == status]
        reasons = sorted({r.split(" (")[0].split(":")[0] for r in rows["reason"]})
        parts.append(f"{status} {len(rows)}" + (f" ({', '.join(reasons)})" if reasons else ""))
    manifest = Path(table.attrs["manifest"])
    print(f"{', '.join(parts)} → {manifest}")
    n_warnings = int(table.attrs.get("warnings", 0))
    log = f"; {n_warnings} DICOM reader warning{'' if n_warnings == 1 else 's'} in {manifest.parent / 'conversion.log'}" if n_warnings else ""
    print(f"details per series: {manifest.parent / 'conversion.tsv'}{log}; fill in the manifest's diagnosis column before 'alzmri preprocess'")
    return manifest
