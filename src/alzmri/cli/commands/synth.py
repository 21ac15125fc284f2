"""``alzmri synth``: the embedded synthetic cohort."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from alzmri.data.synth.config import SynthConfig


class SynthCommand(SynthConfig):
    """SynthConfig plus where to write the cohort."""

    out: Path = Field(description="Output BIDS folder (created; must be new or a previous synth output).", json_schema_extra={"argument": True})
    progress: bool = Field(True, description="Show a progress bar.")


def run(config: SynthCommand) -> Path:
    from alzmri.data.synth import synthesize_cohort

    cohort = SynthConfig(**config.model_dump(exclude={"out", "progress"}))
    out = synthesize_cohort(cohort, config.out, progress=config.progress)
    print(f"synthetic cohort: {out}")
    return out
