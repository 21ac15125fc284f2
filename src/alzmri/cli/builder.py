"""Build Typer commands from pydantic configs, so each option is declared once: in its config.

A field becomes ``--field-name`` (plus a short alias given as ``{"short": "-j"}`` in its
``json_schema_extra``; or a positional argument when that has ``{"argument": True}``) with the field's description as help and its default shown. Sequence
fields take comma-separated values (``--classes CN,AD``). Every command also takes
``--config FILE`` (YAML or JSON): file values are used unless the option is given. A field
with ``{"cli": False}`` gets no option.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import threading
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from alzmri.utils.errors import AlzmriError, Terminated

Runner = Callable[[Any], Any]


def _is_argument(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("argument"))


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _cli_type(annotation: Any) -> tuple[Any, bool]:
    """(annotation for Typer, is_sequence); sequences are read as comma-separated text."""
    annotation = _strip_optional(annotation)
    origin = get_origin(annotation)
    if origin in (list, tuple, set, frozenset):
        return str, True
    if origin is Literal or annotation in (int, float, bool, str):
        return annotation, False
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return Path, False
    return str, False


def _default_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _load_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise AlzmriError(f"config file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:
        raise AlzmriError(f"cannot parse config file {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise AlzmriError(f"config file {path} must hold a mapping of option names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def format_validation_error(exc: ValidationError) -> str:
    """One line naming every invalid option."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "config"
        name = "--" + loc.replace("_", "-") if err["loc"] and isinstance(err["loc"][0], str) else loc
        parts.append(f"{name}: {err['msg']}")
    return "invalid options: " + "; ".join(parts)


def run_guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; turn every failure into one line on stderr and a non-zero exit.

    Set ``ALZMRI_DEBUG=1`` to see the traceback of unexpected errors.
    """
    previous = _on_sigterm()
    try:
        return fn()
    except AlzmriError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except ValidationError as exc:
        typer.echo(f"error: {format_validation_error(exc)}", err=True)
        raise typer.Exit(2) from None
    except Terminated:
        typer.echo("terminated (SIGTERM); re-run the same command to resume", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo("interrupted; re-run the same command to resume", err=True)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:
        if os.environ.get("ALZMRI_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(f"error: unexpected {type(exc).__name__}: {msg} (set ALZMRI_DEBUG=1 for details)", err=True)
        raise typer.Exit(1) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; the previous handler (None off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise Terminated()

    return signal.signal(signal.SIGTERM, handler)


def add_config_command(
    app: typer.Typer,
    name: str,
    config_cls: type[BaseModel],
    runner: str,
    help: str,
    examples: list[str],
) -> None:
    """Register ``alzmri NAME`` built from ``config_cls``.

    Args:
        app: the Typer application.
        name: command name.
        config_cls: pydantic model whose fields are the command's options.
        runner: ``"module:function"`` taking the validated config; imported only when the
            command runs, so ``alzmri --help`` stays fast.
        help: one-paragraph description.
        examples: example command lines shown in ``--help``.
    """
    params: list[inspect.Parameter] = []
    sequences: set[str] = set()
    for field_name, field in config_cls.model_fields.items():
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("cli") is False:
            continue  # inherited by a config that has no use for it
        annotation, is_seq = _cli_type(field.annotation)
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("text"):
            annotation, is_seq = str, False  # structured value given as text; the config's validator parses it
        if is_seq and _is_argument(field):  # a list argument takes any number of values: FILE...
            inner = get_args(_strip_optional(field.annotation)) or (str,)
            annotation, is_seq = list[Path if inner[0] is Path else str], False
        if is_seq:
            sequences.add(field_name)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        kwargs: dict[str, Any] = {"help": field.description or "", "show_default": _default_text(default) or False}
        if _is_argument(field):
            kwargs.pop("show_default")
            info = typer.Argument(None, metavar=field_name.upper(), **kwargs)
        elif annotation is bool:
            flag = field_name.replace("_", "-")
            info = typer.Option(None, f"--{flag}/--no-{flag}", **kwargs)
        else:
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            names = ["--" + field_name.replace("_", "-")] + ([str(extra["short"])] if extra.get("short") else [])
            info = typer.Option(None, *names, **kwargs)
        params.append(inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation | None))
    params.append(
        inspect.Parameter(
            "config_file",
            inspect.Parameter.KEYWORD_ONLY,
            default=typer.Option(None, "--config", help="YAML/JSON file of option values (command-line options win).", metavar="FILE"),
            annotation=Path | None,
        )
    )

    def command(**kwargs: Any) -> None:
        def go() -> Any:
            config_path = kwargs.pop("config_file", None)
            values = _load_config_file(config_path) if config_path else {}
            for key, value in kwargs.items():
                if value is None:
                    continue
                if key in sequences and isinstance(value, str):
                    value = [v.strip() for v in value.split(",") if v.strip()]
                values[key] = value
            missing = [n for n, f in config_cls.model_fields.items() if f.is_required() and n not in values]
            if missing:
                raise AlzmriError("missing " + ", ".join(n.upper() if _is_argument(config_cls.model_fields[n]) else "--" + n.replace("_", "-") for n in missing) + f" (see 'alzmri {name} --help')")
            config = config_cls.model_validate(values)
            module_name, fn_name = runner.split(":")
            import importlib

            return getattr(importlib.import_module(module_name), fn_name)(config)

        run_guarded(go)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    example_text = "\n\n".join(f"  $ {e}" for e in examples)
    app.command(name, help=f"{help}\n\n[bold]Examples[/bold]\n\n{example_text}", no_args_is_help=False)(command)
