"""Slice ids from file names: every preset, a user regex, and one-line errors."""

from __future__ import annotations

import pytest

from alzmri.io.slice_names import PRESETS, SliceName, name_pattern, parse_slice_name
from alzmri.utils.errors import AlzmriError


@pytest.mark.parametrize(
    ("name", "preset", "expected"),
    [
        ("OAS1_0001_MR1_mpr-1_100.jpg", "oasis", SliceName("OAS1_0001", "MR1", 100)),
        ("OAS1_0312_MR2_87.png", "oasis", SliceName("OAS1_0312", "MR2", 87)),  # without the _mpr-N part
        ("sub-07_123.png", "subject_slice", SliceName("sub-07", None, 123)),
        ("patient_a_b_9.tiff", "subject_slice", SliceName("patient_a_b", None, 9)),  # the last underscore splits
        ("26 (14).jpg", "slice_set", SliceName(None, None, 26, "14")),  # no subject id: a set of slices only
        ("29.jpg", "slice_set", SliceName(None, None, 29)),  # bare <slice>.jpg: 27 of the Kaggle test half's names
    ],
)
def test_every_preset(name: str, preset: str, expected: SliceName) -> None:
    assert parse_slice_name(f"/data/{name}", preset) == expected


def test_a_user_regex_names_its_groups_after_the_fields() -> None:
    parsed = parse_slice_name("scan-S12-v2-z040.png", r"scan-(?P<participant_id>S\d+)-(?P<session_id>v\d)-z(?P<slice_index>\d+)")
    assert parsed == SliceName("S12", "v2", 40)
    assert parse_slice_name("nonDem123.jpg", r"(?P<image_set>[a-zA-Z]+)\d+") == SliceName(image_set="nonDem")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(?P<subject>\\d+)", r"unknown group\(s\): subject"),
        ("\\d+_\\d+", "it has no named group"),
        ("(?P<slice_index>[", "neither a preset"),
    ],
)
def test_bad_patterns_are_one_line_errors(pattern: str, message: str) -> None:
    with pytest.raises(AlzmriError, match=message) as info:
        name_pattern(pattern)
    assert "\n" not in str(info.value)


def test_a_name_that_does_not_match_names_the_file_and_the_pattern() -> None:
    with pytest.raises(AlzmriError, match=r"'nonDem123.jpg' does not match the preset 'oasis'"):
        parse_slice_name("train/NonDemented/nonDem123.jpg", "oasis")
    assert set(PRESETS) == {"oasis", "subject_slice", "slice_set"}
