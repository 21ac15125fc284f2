"""Class names are data: folder names, label maps and the ordinal order of disease stages.

A slice dataset names its classes by folder (``NonDemented/``, ``MildDemented/`` ...) or in a
manifest's ``diagnosis`` column. Names are kept as given; their order (the logit order, and the
order of every table and figure) is the clinical order when the names are known stages, else
the order the user's label map lists them in:

* the four OASIS stages by Clinical Dementia Rating: NonDemented (CDR 0), VeryMildDemented
  (0.5), MildDemented (1), ModerateDemented (2) — spelling variants such as ``Non_Demented``
  or ``very mild dementia`` are recognised;
* CN, MCI, AD.

A folder name that is none of these needs ``--label-map`` (``"folder=Class,..."``): guessing
what an unknown folder means would be a silent wrong answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from alzmri.utils.errors import AlzmriError

# (rank, CDR or None) of known stage names, keyed by their normalised spelling.
_OASIS = {"nondemented": (0, 0.0), "verymilddemented": (1, 0.5), "milddemented": (2, 1.0), "moderatedemented": (3, 2.0)}
_ALIASES = {"nondementia": "nondemented", "verymilddementia": "verymilddemented", "milddementia": "milddemented",
            "moderatedementia": "moderatedemented"}  # fmt: skip
_DIAGNOSES = {"cn": (0, None), "mci": (1, None), "ad": (2, None)}


def _norm(name: str) -> str:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return _ALIASES.get(key, key)


def known_stage(name: str) -> tuple[str, int, float | None] | None:
    """``(family, rank, CDR)`` of a known class name (family ``"oasis"`` or ``"diagnosis"``), else None."""
    key = _norm(name)
    if key in _OASIS:
        return ("oasis", *_OASIS[key])
    if key in _DIAGNOSES:
        return ("diagnosis", *_DIAGNOSES[key])
    return None


def cdr(name: str) -> float | None:
    """The Clinical Dementia Rating a known OASIS stage name stands for, else None."""
    stage = known_stage(name)
    return stage[2] if stage else None


def parse_label_map(text: str | Mapping[str, str] | None) -> dict[str, str]:
    """``"a=X,b=Y"`` (or a mapping) as ``{"a": "X", "b": "Y"}``, keeping the order given.

    Raises:
        AlzmriError: an entry without ``=``, an empty side, or one folder mapped twice.
    """
    if text is None:
        return {}
    if isinstance(text, Mapping):
        return {str(k): str(v) for k, v in text.items()}
    out: dict[str, str] = {}
    for entry in (e.strip() for e in str(text).split(",")):
        if not entry:
            continue
        source, sep, target = (part.strip() for part in entry.partition("="))
        if not sep or not source or not target:
            raise AlzmriError(f"label map entry {entry!r} is not FOLDER=CLASS (e.g. --label-map 'Non_Demented=CN,Mild_Demented=AD')")
        if source in out:
            raise AlzmriError(f"label map names {source!r} twice")
        out[source] = target
    return out


def map_label(name: str, label_map: Mapping[str, str], where: str) -> str:
    """The class of a folder name or manifest diagnosis: the label map's entry, else the name itself if it is a known stage.

    Raises:
        AlzmriError: an unknown name that the label map does not cover.
    """
    if name in label_map:
        return label_map[name]
    if known_stage(name) is not None:
        return name
    if label_map:
        raise AlzmriError(f"{where}: {name!r} is neither a known stage nor in the label map (it maps {', '.join(label_map)}); add '{name}=CLASS' to --label-map")
    known = "NonDemented, VeryMildDemented, MildDemented, ModerateDemented, CN, MCI, AD"
    raise AlzmriError(f"{where}: class {name!r} is not a known stage ({known}); name its class with --label-map '{name}=CLASS,...'")


def ordered_classes(names: Iterable[str], label_map: Mapping[str, str] | None = None) -> list[str]:
    """The classes in clinical order: known stages by rank, then the label map's order, then by name.

    Raises:
        AlzmriError: the names mix stage families (e.g. ``MildDemented`` and ``AD``), whose order is undefined.
    """
    names = list(dict.fromkeys(names))
    stages = {n: known_stage(n) for n in names}
    families = {s[0] for s in stages.values() if s}
    if len(families) > 1:
        raise AlzmriError(f"classes {names} mix OASIS stages and CN/MCI/AD; map them to one scheme with --label-map")
    targets = list(dict.fromkeys((label_map or {}).values()))

    def key(name: str) -> tuple[int, int, str]:
        stage = stages[name]
        if stage:
            return (0, stage[1], "")
        if name in targets:
            return (1, targets.index(name), "")
        return (2, 0, name)

    return sorted(names, key=key)
