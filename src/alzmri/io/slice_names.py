"""Subject, session and slice ids parsed from 2D slice file names, by named preset or a user regex.

2D Alzheimer's datasets rarely come with a manifest; what is known about a slice is in its file
name, if anywhere. The presets cover the layouts we have met:

* ``oasis``: OASIS-1 exports, ``OAS1_0001_MR1_mpr-1_100.jpg`` → subject ``OAS1_0001``, session
  ``MR1``, slice 100 (the ``_mpr-N`` part is optional).
* ``subject_slice``: ``<subject>_<slice>.<ext>``, e.g. ``sub-07_123.png`` → subject ``sub-07``, slice 123
  (the subject is everything before the last underscore).
* ``slice_set``: ``<slice> (<n>).jpg``, the test half of the Kaggle "4 class" dataset: slice 26-32 of
  image set ``n``. Whether a set is one person is not stated, so ``n`` is kept as ``image_set`` and
  the subject stays unknown (a bare ``<slice>.jpg``, 27 of that half's 1,279 files, has no set).

A user regex names its groups after the fields (``participant_id``, ``session_id``,
``slice_index``, ``image_set``); it is matched against the file name without its extension.
A slice without a subject id is allowed: :attr:`SliceName.participant_id` is then ``None`` and
every later output says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from alzmri.utils.errors import AlzmriError

FIELDS = ("participant_id", "session_id", "slice_index", "image_set")
PRESETS: dict[str, str] = {
    "oasis": r"(?P<participant_id>OAS\d_\d{4})_(?P<session_id>MR\d+)(?:_mpr-\d+)?_(?P<slice_index>\d+)",
    "subject_slice": r"(?P<participant_id>.+)_(?P<slice_index>\d+)",
    "slice_set": r"(?P<slice_index>\d+)(?: \((?P<image_set>\d+)\))?",
}


@dataclass(frozen=True)
class SliceName:
    """What a slice's file name says about it (``None`` where it says nothing)."""

    participant_id: str | None = None
    session_id: str | None = None
    slice_index: int | None = None
    image_set: str | None = None


def name_pattern(preset_or_regex: str) -> re.Pattern[str]:
    """The compiled pattern of a preset name, or of a user regex with named groups from :data:`FIELDS`.

    Raises:
        AlzmriError: for an invalid regex, one without any known named group, or with an unknown one.
    """
    source = PRESETS.get(preset_or_regex, preset_or_regex)
    try:
        pattern = re.compile(source)
    except re.error as exc:
        raise AlzmriError(f"slice name pattern {preset_or_regex!r} is neither a preset ({', '.join(PRESETS)}) nor a valid regex: {exc}") from None
    unknown = sorted(set(pattern.groupindex) - set(FIELDS))
    if unknown or not pattern.groupindex:
        raise AlzmriError(
            f"slice name regex {preset_or_regex!r} must name its groups after {', '.join(FIELDS)}"
            + (f"; unknown group(s): {', '.join(unknown)}" if unknown else "; it has no named group")
        )
    return pattern


def parse_slice_name(path: str | Path, preset_or_regex: str) -> SliceName:
    """Parse one slice's file name (without its extension) with a preset or a user regex.

    Raises:
        AlzmriError: when the name does not match, naming the file and the pattern.
    """
    stem = Path(path).stem  # without its one image extension: a.b_3.png → a.b_3
    match = name_pattern(preset_or_regex).fullmatch(stem)
    if match is None:
        raise AlzmriError(f"slice file name {Path(path).name!r} does not match the {_describe(preset_or_regex)}")
    found = {k: v for k, v in match.groupdict().items() if v is not None and v != ""}
    slice_index = int(found["slice_index"]) if "slice_index" in found else None
    return SliceName(found.get("participant_id"), found.get("session_id"), slice_index, found.get("image_set"))


def _describe(preset_or_regex: str) -> str:
    return f"preset {preset_or_regex!r} ({PRESETS[preset_or_regex]})" if preset_or_regex in PRESETS else f"regex {preset_or_regex!r}"
