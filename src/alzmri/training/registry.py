"""The MLflow model registry: ``alzmri train --register-model NAME`` registers the run's best checkpoint; ``models:/NAME/VERSION`` fetches it back.

A version's source is the MLflow run's ``checkpoints`` artifact folder, which holds the best
checkpoint (it carries its own model, classes and preprocessing) and ``preprocessing.json``, the
same preprocessing as a plain file, so a registry browser shows how scans must be prepared.
The version's tags name the checkpoint file, the network and the classes. Nothing here
downloads from outside: the registry is the local store the run was tracked in (by default
``sqlite:///OUT/mlflow.db``) or a server the user names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from alzmri.utils.atomic import atomic_write_text
from alzmri.utils.errors import AlzmriError, first_line

MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+?)(?:/(?P<version>[1-9]\d*|latest)|@(?P<alias>[A-Za-z0-9_-]+))?/?$")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def is_model_uri(text: str) -> bool:
    return str(text).startswith("models:/")


def _client(tracking_uri: str) -> Any:
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    from alzmri.training.tracking import quiet_libraries

    quiet_libraries()
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register_checkpoint(name: str, checkpoint: Path, run_id: str, tracking_uri: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """Register ``checkpoint`` (already logged under the run's ``checkpoints`` artifacts) as a new version of ``name``.

    Returns:
        ``{"registered_model": name, "model_version": N, "model_uri": "models:/NAME/N"}`` for result.json.
    """
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    folder = checkpoint.parent
    try:
        try:
            client.create_registered_model(name, description="alzmri classifier (alzmri train --register-model); serve with: alzmri serve models:/NAME/VERSION")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        earlier = [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id == run_id]
        if earlier:  # this run is registered already (a resumed or repeated end of training): no second version
            version = max(earlier, key=lambda v: int(v.version))
            return {"registered_model": name, "model_version": int(version.version), "model_uri": f"models:/{name}/{version.version}"}
        preprocessing = folder / "preprocessing.json"
        atomic_write_text(preprocessing, json.dumps(hparams.get("preprocess", {}), indent=1, default=str) + "\n")
        client.log_artifact(run_id, str(preprocessing), artifact_path="checkpoints")
        source = f"{client.get_run(run_id).info.artifact_uri}/checkpoints"
        tags = {"alzmri_checkpoint": checkpoint.name, "alzmri_model": str(hparams.get("model_name", "")), "alzmri_classes": ",".join(map(str, hparams.get("classes", [])))}
        version = client.create_model_version(name, source, run_id=run_id, tags=tags, description=f"best checkpoint of run {folder.parent.name}")
    except (MlflowException, OSError) as exc:
        raise AlzmriError(f"cannot register the model as {name!r} in {tracking_uri}: {first_line(exc)}") from None
    return {"registered_model": name, "model_version": int(version.version), "model_uri": f"models:/{name}/{version.version}"}


def fetch_registered(uri: str, tracking_uri: str | None, folder: Path) -> Path:
    """Download the checkpoint of ``models:/NAME/VERSION`` (or ``/latest``, ``@alias``) into ``folder``; its path.

    Raises:
        AlzmriError: a malformed URI, no tracking URI, a store that does not exist, an unknown
            name or version, or a version whose files are gone (one line each).
    """
    match = MODEL_URI.match(uri)
    if match is None:
        raise AlzmriError(f"{uri!r} is not a registry model URI: expected models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS")
    if not NAME.match(match["name"]):
        raise AlzmriError(f"{uri}: {match['name']!r} is not a model name alzmri registers (letters, digits, '_', '.', '-')")
    if not tracking_uri:
        raise AlzmriError(f"{uri} is in an MLflow registry: say which with --tracking-uri (the training run's store, e.g. sqlite:///runs/mlflow.db) or MLFLOW_TRACKING_URI")
    if tracking_uri.startswith("sqlite:///") and not Path(unquote(tracking_uri.removeprefix("sqlite:///").split("?")[0])).is_file():
        raise AlzmriError(f"the MLflow store {tracking_uri} does not exist (the train run's --out folder holds mlflow.db)")
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    name, version, alias = match["name"], match["version"], match["alias"]
    try:
        if alias:
            found = client.get_model_version_by_alias(name, alias)
        elif version and version != "latest":
            found = client.get_model_version(name, version)
        else:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise AlzmriError(f"{uri}: no registered model {name!r} in {tracking_uri}")
            found = max(versions, key=lambda v: int(v.version))
        checkpoint = found.tags.get("alzmri_checkpoint")
        if not checkpoint:
            raise AlzmriError(f"{uri} was not registered by 'alzmri train --register-model' (no alzmri_checkpoint tag)")
        import mlflow.artifacts

        path = mlflow.artifacts.download_artifacts(artifact_uri=f"{found.source}/{checkpoint}", dst_path=str(folder), tracking_uri=tracking_uri)
    except MlflowException as exc:
        raise AlzmriError(f"{uri}: {first_line(exc)} (registry {tracking_uri})") from None
    except OSError as exc:
        raise AlzmriError(f"{uri}: its files cannot be read ({first_line(exc)})") from None
    return Path(path)
