"""Claiming a run folder: ``config.json`` says whose it is, so a re-run resumes and a clash is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError


def claim_run_dir(run_dir: Path, record: dict[str, Any]) -> bool:
    """Make ``run_dir`` this run's folder, or accept it as this run's; True when newly made.

    Args:
        run_dir: the run folder.
        record: what ``config.json`` holds; its ``hash_fields`` identify the run.

    Raises:
        AlzmriError: the folder holds a run with other settings, or files that are not a run's.
    """
    cfg_path = run_dir / "config.json"
    if cfg_path.is_file():
        stored = json.loads(cfg_path.read_text())
        if stored.get("hash_fields") != record["hash_fields"]:
            raise AlzmriError(f"run folder {run_dir} holds a run with other settings; pass another --run-name")
        return False
    if run_dir.exists() and any(run_dir.iterdir()):
        raise AlzmriError(f"{run_dir} exists and is not an alzmri run folder; pass another --run-name")
    existed = run_dir.exists()
    atomic_write_text(cfg_path, json.dumps(record, indent=2) + "\n")
    return not existed
