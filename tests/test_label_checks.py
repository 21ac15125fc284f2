"""Label checks before training: every class in train and val; split and cache agree on labels."""

from __future__ import annotations

import pandas as pd
import pytest

from alzmri.data.label_checks import check_training_splits, compare_labels
from alzmri.utils.errors import AlzmriError


def scans(*diagnoses: str, first: int = 1) -> pd.DataFrame:
    """One scan per diagnosis, subjects numbered from ``first``."""
    return pd.DataFrame({
        "participant_id": [f"sub-{i:02d}" for i in range(first, first + len(diagnoses))],
        "session_id": ["ses-01"] * len(diagnoses),
        "diagnosis": list(diagnoses),
    })


def message(func, *args, **kwargs) -> str:
    with pytest.raises(AlzmriError) as info:
        func(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_complete_splits_pass_without_warnings():
    assert check_training_splits(scans("CN", "AD", "CN"), scans("AD", "CN", first=9), ["CN", "AD"]) == []


def test_class_missing_from_val_is_refused():
    assert message(check_training_splits, scans("CN", "AD"), scans("CN", "CN", first=9), ["CN", "AD"]) == (
        "the val split has no scans of class AD; a model cannot be selected on it — re-split with more subjects or fewer classes"
    )


def test_class_missing_from_train_is_refused_first_and_the_folder_named():
    text = message(check_training_splits, scans("CN"), scans("CN", first=9), ["CN", "MCI", "AD"], where="split")
    assert text == ("the train split of split has no scans of classes MCI, AD; a model cannot learn it — "
                    "re-split with more subjects or fewer classes")


def test_an_empty_val_split_lacks_every_class():
    text = message(check_training_splits, scans("CN", "AD"), scans().iloc[:0], ["CN", "AD"])
    assert text.startswith("the val split has no scans of classes CN, AD;")


def test_scans_outside_the_classes_are_a_warning():
    warnings = check_training_splits(scans("CN", "AD", "MCI", "MCI"), scans("CN", "AD", "MCI", "", first=9), ["CN", "AD"])
    assert warnings == [
        "the train split has scans outside the classes CN, AD (2 MCI); training leaves them out",
        "the val split has scans outside the classes CN, AD (1 MCI, 1 unlabelled); training leaves them out",
    ]


def test_diagnoses_are_compared_in_upper_case():
    assert check_training_splits(scans("cn", "Ad"), scans(" AD", "CN ", first=9), ["CN", "AD"]) == []


def test_matching_labels_pass():
    split = scans("CN", "AD")
    cache = scans("MCI", "CN", "ad", first=0)  # sub-01 CN and sub-02 ad: the split's labels (any case)
    # sub-00 (MCI) is not in the split, so it is not compared.
    compare_labels(split, cache)


def test_a_different_label_in_the_cache_is_refused_with_count_and_example():
    split = scans("CN", "AD", "AD")
    cache = scans("CN", "CN", "MCI")
    assert message(compare_labels, split, cache, split_name="val") == (
        "2 scans of the val split have another diagnosis in the cache manifest, e.g. sub-02/ses-01: AD in the split, "
        "CN in the cache; split and cache were made from different labels: re-run 'alzmri preprocess' "
        "(cached arrays are reused) or 'alzmri split' with the same labels"
    )


def test_an_unlabelled_cache_scan_differs_from_a_labelled_split_scan():
    cache = scans("CN", "AD")
    cache.loc[1, "diagnosis"] = float("nan")
    text = message(compare_labels, scans("CN", "AD"), cache)
    assert text.startswith("1 scan of the train split has another diagnosis in the cache manifest, e.g. sub-02/ses-01: AD in the split, none in the cache;")


def test_sessions_are_matched_not_only_subjects():
    split = pd.DataFrame({"participant_id": ["sub-01", "sub-01"], "session_id": ["ses-01", "ses-02"], "diagnosis": ["CN", "MCI"]})
    cache = split.assign(diagnosis=["CN", "CN"])
    assert "sub-01/ses-02: MCI in the split, CN in the cache" in message(compare_labels, split, cache)
    compare_labels(split.drop(columns="diagnosis"), cache)  # nothing to compare
