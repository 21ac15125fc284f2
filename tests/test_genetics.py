"""Genetic tables: typed columns, APOE genotypes, missing calls, one-line errors for bad tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alzmri.io.genetics import apoe_e4_count, read_genetics
from alzmri.utils.errors import AlzmriError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_columns_are_typed_and_apoe_counts_e4(tmp_path: Path) -> None:
    table = _write(tmp_path / "g.tsv", "participant_id\tAPOE\trs429358\tsnp_2\tsite\n"
                                       "sub-01\te3/e4\t1\t0\tA\nsub-02\tE4E4\t2\tNA\tB\nsub-03\t3/3\t\t0.5\t\nsub-04\t.\t0\t2\tA\n")
    genetics = read_genetics(table)
    assert list(genetics.values.index) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert genetics.kinds == {"apoe": "apoe_e4", "rs429358": "dosage", "snp_2": "dosage", "site": "categorical"}
    np.testing.assert_array_equal(genetics.values["apoe"].to_numpy(), [1.0, 2.0, 0.0, np.nan])
    np.testing.assert_array_equal(genetics.values["snp_2"].to_numpy(), [0.0, np.nan, 0.5, 2.0])  # imputed dosages between 0 and 2 pass
    site = genetics.values["site"]
    assert list(site[site.notna()]) == ["A", "B", "A"] and site.isna().tolist() == [False, False, True, False]
    assert [apoe_e4_count(v) for v in ("e2/e4", "2", "e2|e3")] == [1.0, 2.0, 0.0]
    parquet = tmp_path / "g.parquet"
    pd.read_csv(table, sep="\t", dtype=str, keep_default_na=False).to_parquet(parquet)
    again = read_genetics(parquet)
    assert again.kinds == genetics.kinds and again.values.equals(genetics.values)


@pytest.mark.parametrize(("text", "message"), [
    ("id\tsnp_1\nsub-01\t1\n", "no participant_id column"),
    ("participant_id\tsnp_1\nsub-01\t1\nsub-01\t2\n", "sub-01 appears more than once"),
    ("participant_id\trs12\nsub-01\t1\nsub-02\tAG\n", "dosage column rs12 has 'AG' for sub-02"),
    ("participant_id\tsnp_1\nsub-01\t3\n", "dosages lie in 0-2"),
    ("participant_id\tsnp_1\tsnp_2\nsub-01\t1\tNA\nsub-02\t0\t\n", "column snp_2 has no value"),
    ("participant_id\tAPOE\nsub-01\te3/e5\n", "not an APOE genotype"),
    ("participant_id\nsub-01\n", "no column besides participant_id"),
])  # fmt: skip
def test_bad_tables_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "g.tsv", text)
    with pytest.raises(AlzmriError, match=message) as error:
        read_genetics(path)
    assert "\n" not in str(error.value)
    assert path.read_text() == text  # the input is untouched


def test_synthetic_genetics_read_back(tmp_path: Path) -> None:
    from alzmri.data.synth import SynthConfig
    from alzmri.data.synth.bids import _tsv
    from alzmri.data.synth.cohort import plan_subjects
    from alzmri.data.synth.genetics import plan_genetics

    config = SynthConfig(subjects=30, snps=6, seed=3)
    header, rows, _ = plan_genetics(plan_subjects(config), tuple(config.classes), False, 6, 2, 1.5, seed=3)
    genetics = read_genetics(_write(tmp_path / "genetics.tsv", _tsv(header, rows)))
    assert genetics.kinds == {"apoe": "apoe_e4", **{f"snp_{i:03d}": "dosage" for i in range(1, 7)}}
    assert len(genetics.values) == 30 and set(np.unique(genetics.values["apoe"])) <= {0.0, 1.0, 2.0}


def _table(tmp_path: Path, rows: list[str], name: str = "g.tsv") -> object:
    return read_genetics(_write(tmp_path / name, "participant_id\tAPOE\trs1\tsite\n" + "".join(r + "\n" for r in rows)))


ROWS = ["sub-01\te3/e3\t0\tA", "sub-02\te3/e4\t1\tB", "sub-03\te4/e4\tNA\tA", "sub-04\te3/e4\t2\t", "sub-05\te2/e3\t1\tC", "sub-06\te3/e3\t0\tA"]


def test_alignment_is_by_participant_only(tmp_path: Path) -> None:
    from alzmri.data.genetics import GeneticEncoder, align

    genetics = _table(tmp_path, ROWS)
    alignment = align(["sub-02", "sub-02", "sub-05", "sub-09"], genetics)
    assert alignment.matched == ["sub-02", "sub-05"] and alignment.imaging_only == ["sub-09"] and len(alignment.genetics_only) == 4
    assert "2 matched, 1 with images only, 4 with genetics only" in alignment.summary()
    assert alignment.table().set_index("participant_id").loc["sub-09"].tolist() == [True, False]
    encoder = GeneticEncoder.fit(genetics, ["sub-01", "sub-02", "sub-03"])
    reversed_rows = _table(tmp_path, ROWS[::-1], "reversed.tsv")  # the same people in another row order
    ask = ["sub-05", "sub-09", "sub-02"]
    for a, b in zip(encoder.transform(genetics, ask), encoder.transform(reversed_rows, ask), strict=True):
        np.testing.assert_array_equal(a, b)
    features, present = encoder.transform(genetics, ask)
    assert present.tolist() == [True, False, True] and not features[1].any()  # no genetics: zeros, flagged absent
    with pytest.raises(AlzmriError, match="no participant of the images is in the genetic table"):
        align(["1", "2"], genetics)


def test_encoders_learn_from_training_subjects_only(tmp_path: Path) -> None:
    """Changing or removing the held-out rows leaves every fitted number unchanged; the result equals scikit-learn's."""
    import json

    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from alzmri.data.genetics import GeneticEncoder

    train = ["sub-01", "sub-02", "sub-03", "sub-04"]
    genetics = _table(tmp_path, ROWS)
    encoder = GeneticEncoder.fit(genetics, train)
    changed = _table(tmp_path, ROWS[:4] + ["sub-05\te4/e4\t2\tZ", "sub-06\te4/e4\t2\tZ"], "changed.tsv")
    assert GeneticEncoder.fit(changed, train) == encoder == GeneticEncoder.fit(_table(tmp_path, ROWS[:4], "train.tsv"), train)
    assert encoder.categories == [["A", "B"]] and encoder.fill == ["A"]  # C and Z are held-out categories
    assert GeneticEncoder.from_dict(json.loads(json.dumps(encoder.to_dict()))) == encoder
    features, _ = encoder.transform(genetics, [f"sub-0{i}" for i in range(1, 7)])
    reference = ColumnTransformer([("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["apoe", "rs1"]),
                                   ("cat", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")), ["site"])])
    values = genetics.values.astype(object).where(genetics.values.notna(), np.nan)
    reference.fit(values.loc[train])
    np.testing.assert_allclose(features, reference.transform(values), atol=1e-6)
    assert encoder.groups == {"apoe": [0], "rs1": [1], "site": [2, 3]} and encoder.feature_names[2:] == ["site=A", "site=B"]
    with pytest.raises(AlzmriError, match="no training participant has genetics"):
        GeneticEncoder.fit(genetics, ["sub-99"])
