"""Metrics from predictions tables equal scikit-learn's; predictions files are validated."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)

from alzmri.evaluation.metrics import classification_metrics, scan_and_subject_metrics, subject_level
from alzmri.evaluation.predict import predictions_table
from alzmri.evaluation.predictions import read_predictions, validate_predictions
from alzmri.utils.errors import AlzmriError


def random_table(classes: list[str], n: int = 200, seed: int = 0) -> pd.DataFrame:
    """Noisy but informative predictions, written the way ``alzmri evaluate`` writes them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(classes), n)
    logits = rng.normal(size=(n, len(classes))) + 1.2 * np.eye(len(classes))[y]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scans = pd.DataFrame({
        "participant_id": [f"sub-{i // 2:03d}" for i in range(n)],
        "session_id": [f"ses-M{12 * (i % 2):02d}" for i in range(n)],
        "diagnosis": [classes[k] for k in y],
    })
    return predictions_table(scans, probs, classes)


def guo_ece(y_true: np.ndarray, probs: np.ndarray, classes: list[str], n_bins: int = 10) -> float:
    """Top-label ECE written out as in Guo et al. (2017)."""
    conf = probs.max(axis=1)
    acc = np.asarray(classes)[probs.argmax(axis=1)] == y_true
    edges = np.linspace(0, 1, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.sum():
            total += in_bin.mean() * abs(acc[in_bin].mean() - conf[in_bin].mean())
    return total


# predictions_table rounds to 6 decimals, which sklearn's Brier score notices
@pytest.mark.filterwarnings("ignore:The y_prob values do not sum to one")
@pytest.mark.parametrize("classes", [["CN", "MCI", "AD"], ["CN", "AD"]])
def test_metrics_equal_sklearn(classes):
    table = random_table(classes)
    m = classification_metrics(table, classes)
    y, yp = table["diagnosis"].to_numpy(), table["predicted"].to_numpy()
    p = table[[f"prob_{c}" for c in classes]].to_numpy()
    onehot = np.stack([(y == c).astype(int) for c in classes], axis=1)

    assert m["n_scans"] == len(table) and m["n_subjects"] == table["participant_id"].nunique()
    assert m["class_counts"] == {c: int((y == c).sum()) for c in classes}
    assert m["accuracy"] == pytest.approx(accuracy_score(y, yp))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, yp))
    assert m["macro_f1"] == pytest.approx(f1_score(y, yp, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, yp, average="weighted"))
    assert m["mcc"] == pytest.approx(matthews_corrcoef(y, yp))
    assert m["cohen_kappa"] == pytest.approx(cohen_kappa_score(y, yp))
    assert m["micro_auc"] == pytest.approx(roc_auc_score(onehot, p, average="micro"))
    assert m["macro_pr_auc"] == pytest.approx(average_precision_score(onehot, p, average="macro"))
    cm = confusion_matrix(y, yp, labels=classes)
    assert m["confusion_matrix"] == cm.tolist()
    # sklearn orders probability columns alphabetically by label
    order = np.argsort(classes)
    assert m["brier"] == pytest.approx(
        brier_score_loss(y, p[:, order], labels=sorted(classes), scale_by_half=False)
    )
    assert m["ece"] == pytest.approx(guo_ece(y, p, classes))
    assert 0 <= m["ece"] <= 1

    if len(classes) == 3:
        assert m["macro_auc"] == pytest.approx(
            roc_auc_score(y, p[:, order], multi_class="ovr", labels=sorted(classes), average="macro")
        )
        assert "positive_class" not in m
    for i, c in enumerate(classes):
        row = m["per_class"][c]
        assert row["precision"] == pytest.approx(precision_score(y, yp, labels=[c], average="macro"))
        assert row["recall"] == pytest.approx(recall_score(y, yp, labels=[c], average="macro"))
        assert row["f1"] == pytest.approx(f1_score(y, yp, labels=[c], average="macro"))
        assert row["support"] == int((y == c).sum())
        assert row["auc"] == pytest.approx(roc_auc_score(y == c, p[:, i])) == m["auc"][c]
        assert row["pr_auc"] == pytest.approx(average_precision_score(y == c, p[:, i]))
        # specificity by hand: true negatives / all negatives
        tn = cm.sum() - cm[i, :].sum() - cm[:, i].sum() + cm[i, i]
        assert row["specificity"] == pytest.approx(tn / (cm.sum() - cm[i, :].sum()))

    if len(classes) == 2:
        assert m["positive_class"] == "AD"
        assert m["macro_auc"] == pytest.approx(roc_auc_score(y == "AD", p[:, 1]))
        assert m["sensitivity"] == pytest.approx(recall_score(y, yp, pos_label="AD"))
        assert m["specificity"] == pytest.approx(recall_score(y, yp, pos_label="CN"))
        (tn, fp), (fn, tp) = cm
        assert m["sensitivity"] == pytest.approx(tp / (tp + fn))
        assert m["specificity"] == pytest.approx(tn / (tn + fp))
        # the customary binary Brier score is half the multiclass one
        assert m["brier"] / 2 == pytest.approx(brier_score_loss(y == "AD", p[:, 1]))


def test_undefined_metrics_are_nan():
    classes = ["CN", "MCI", "AD"]
    table = random_table(classes, n=30)
    table = table[table["diagnosis"] != "MCI"]
    m = classification_metrics(table, classes)
    assert math.isnan(m["auc"]["MCI"]) and math.isnan(m["per_class"]["MCI"]["pr_auc"])
    assert m["macro_auc"] == pytest.approx(np.mean([m["auc"]["CN"], m["auc"]["AD"]]))
    assert m["per_class"]["MCI"]["support"] == 0 and m["per_class"]["MCI"]["recall"] == 0

    binary = classification_metrics(tiny()[tiny()["diagnosis"] == "CN"], ["CN", "AD"])
    assert math.isnan(binary["sensitivity"]) and binary["specificity"] == 1.0
    assert math.isnan(binary["auc"]["AD"]) and binary["per_class"]["AD"]["support"] == 0


def tiny() -> pd.DataFrame:
    return pd.DataFrame({
        "participant_id": ["sub-1", "sub-1", "sub-2", "sub-3"],
        "session_id": ["ses-M12", "ses-M6", "ses-M00", "ses-M00"],
        "diagnosis": ["AD", "CN", "CN", "AD"],
        "prob_CN": [0.2, 0.9, 0.7, 0.4],
        "prob_AD": [0.8, 0.1, 0.3, 0.6],
        "predicted": ["AD", "CN", "CN", "AD"],
    })


def test_subject_level_by_hand():
    subjects = subject_level(tiny(), ["CN", "AD"])
    assert subjects["participant_id"].tolist() == ["sub-1", "sub-2", "sub-3"]
    assert subjects["n_sessions"].tolist() == [2, 1, 1]
    assert subjects["session_id"].tolist() == ["", "", ""]
    # sub-1: mean of (0.2, 0.9) and (0.8, 0.1); label of the last session, ses-M12 (after ses-M6)
    assert subjects["prob_CN"].tolist() == pytest.approx([0.55, 0.7, 0.4])
    assert subjects["prob_AD"].tolist() == pytest.approx([0.45, 0.3, 0.6])
    assert subjects["diagnosis"].tolist() == ["AD", "CN", "AD"]
    assert subjects["predicted"].tolist() == ["CN", "CN", "AD"]

    both = scan_and_subject_metrics(tiny(), ["CN", "AD"])
    assert both["scan"]["n_scans"] == 4 and both["scan"]["accuracy"] == 1.0
    assert both["subject"]["n_scans"] == 3 and both["subject"]["accuracy"] == pytest.approx(2 / 3)
    assert both["subject"]["confusion_matrix"] == [[1, 0], [1, 1]]


def test_subject_level_refuses_mixed_splits():
    table = tiny().assign(split=["train", "test", "test", "test"])
    with pytest.raises(AlzmriError, match="sub-1 has sessions in splits test, train"):
        subject_level(table, ["CN", "AD"])
    subjects = subject_level(table[table["split"] == "test"], ["CN", "AD"])
    assert subjects["split"].tolist() == ["test"] * 3


# --- predictions files --------------------------------------------------------------------

def write(tmp_path, text: str, name: str = "predictions.tsv"):
    path = tmp_path / name
    path.write_text(text.replace("|", "\t") if name.endswith(".tsv") else text)
    return path


GOOD = (
    "participant_id|session_id|diagnosis|prob_CN|prob_AD|predicted|split\n"
    "sub-1|ses-M00|CN|0.900000|0.100000|CN|test\n"
    "sub-1|ses-M12|AD|0.333333|0.666667|AD|test\n"
    "sub-2|ses-M00|AD|0.6|0.4|CN|test\n"
)


def test_read_good_tsv(tmp_path):
    table, classes = read_predictions(write(tmp_path, GOOD))
    assert classes == ["CN", "AD"]
    assert table["prob_AD"].dtype == float and table["split"].tolist() == ["test"] * 3
    m = classification_metrics(table, classes)
    assert m["confusion_matrix"] == [[1, 0], [1, 1]]


def test_read_alzmri_output_roundtrip(tmp_path):
    classes = ["CN", "MCI", "AD"]
    table = random_table(classes, n=60)
    path = tmp_path / "predictions.tsv"
    table.to_csv(path, sep="\t", index=False)
    back, got = read_predictions(path)
    assert got == classes
    assert classification_metrics(back, classes)["accuracy"] == classification_metrics(table, classes)["accuracy"]


def test_csv_without_optional_columns_works(tmp_path):
    path = write(tmp_path, "Participant_ID,Diagnosis,prob_CN,prob_MCI,prob_AD\ns1,CN,0.7,0.2,0.1\ns2,AD,0.1,0.5,0.4\n",
                 "other_tool.csv")
    table, classes = read_predictions(path)
    assert classes == ["CN", "MCI", "AD"]
    assert table["session_id"].tolist() == ["", ""]
    assert table["predicted"].tolist() == ["CN", "MCI"]


BAD = [
    ("participant_id|session_id|prob_CN|prob_AD\ns1|a|0.5|0.5\n", r"lacks required columns: diagnosis"),
    ("participant_id|diagnosis|prob_CN\ns1|CN|1\n", r"at least two prob_<class> columns \(found 1\)"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2|AD|0.6|0.5\n",
     r"row 2 \(s2\): probabilities sum to 1\.1, not 1"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2|CN|0.4|0.6\n",
     r"every true label is 'CN'; metrics need at least two true classes"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2|AD|NaN|0.6\n", r"row 2 \(s2\): prob_CN is empty"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2|AD||0.6\n", r"row 2 \(s2\): prob_CN is empty"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2|AD|abc|0.6\n", r"prob_CN is not a number \('abc'\)"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2||0.4|0.6\n", r"row 2: empty diagnosis"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|1.5|-0.5\ns2|AD|0.4|0.6\n", r"row 1 \(s1\): prob_CN = 1\.5 is outside \[0, 1\]"),
    ("participant_id|diagnosis|prob_CN|prob_AD\ns1|CN|0.5|0.5\ns2|MCI|0.4|0.6\n",
     r"row 2 \(s2\): diagnosis 'MCI' is not one of the classes CN, AD"),
    ("participant_id|session_id|diagnosis|prob_CN|prob_AD\ns1|a|CN|0.5|0.5\ns2|a|AD|0.4|0.6\ns1|a|CN|0.5|0.5\n",
     r"participant_id 's1' session_id 'a' appears more than once \(rows 1, 3\)"),
    ("participant_id|diagnosis|prob_CN|prob_AD|predicted\ns1|CN|0.5|0.5|CN\ns2|AD|0.4|0.6|XX\n",
     r"row 2 \(s2\): predicted 'XX' is not one of the classes"),
    ("participant_id|diagnosis|prob_CN|prob_CN\ns1|CN|0.5|0.5\n", r"column 'prob_CN' appears more than once"),
    ("participant_id|diagnosis|prob_CN|prob_AD\n", r"has no rows"),
    ("", r"is empty"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_predictions_files(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(AlzmriError, match=message) as info:
        read_predictions(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_files(tmp_path):
    with pytest.raises(AlzmriError, match="does not exist"):
        read_predictions(tmp_path / "nope.tsv")
    with pytest.raises(AlzmriError, match="not a TSV or CSV"):
        read_predictions(write(tmp_path, GOOD, "predictions.txt"))
    with pytest.raises(AlzmriError, match="single column: is it really tab-separated"):
        read_predictions(write(tmp_path, GOOD.replace("|", ","), "comma.tsv"))


def test_validate_in_memory_table():
    table = tiny().drop(columns=["session_id", "predicted"])
    with pytest.raises(AlzmriError, match="'sub-1' session_id '' appears more than once"):
        validate_predictions(table, where="my table")
    table = tiny().drop(columns=["predicted"])
    assert validate_predictions(table, where="my table") == ["CN", "AD"]
    assert table["predicted"].tolist() == ["AD", "CN", "CN", "AD"]
