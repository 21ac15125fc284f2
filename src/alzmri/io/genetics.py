"""Genetic tables: one row per ``participant_id``, read and checked, every column typed.

Accepted: TSV, CSV (separator from the suffix, else sniffed) and Parquet. Columns:

* ``participant_id`` (required; unique, non-empty): the only key that pairs genetics with
  imaging — never the row position;
* **APOE**: a column named ``apoe`` or ``apoe_genotype`` (any case) with genotype strings such as
  ``e3/e4``, ``E4E4`` or ``3/4``, or already a count (0/1/2), read as the number of ε4 alleles;
* **dosages**: columns named like a variant (``rs123``, ``snp…``, ``chr1:12345…``) or whose
  every value is a number: 0, 1, 2 (imputed dosages between them accepted);
* **categorical**: any other column (text), encoded later from the training subjects only.

Empty cells, ``NA``, ``NaN``, ``.`` and ``-9`` (PLINK's missing phenotype) are missing. A column
with no value at all, a dosage outside [0, 2] or not a number, and an unreadable genotype are
one-line errors. PLINK ``.bed`` and VCF are not read: export them to a dosage table (``plink2
--export A``, ``bcftools query``) — one well-specified format keeps the id alignment checkable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alzmri.io.manifest import read_table
from alzmri.utils.errors import AlzmriError

MISSING = {"", "na", "nan", "n/a", ".", "-9", "none", "null"}
_VARIANT = re.compile(r"^(rs\d+|snp.*|chr[0-9xymt]+[:_].*|\d+:\d+.*)$", re.IGNORECASE)
_APOE_NAMES = {"apoe", "apoe_genotype", "apoe_status"}
_GENOTYPE = re.compile(r"^\s*e?([234])\s*[/|;,\s-]?\s*e?([234])\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class GeneticTable:
    """A checked genetic table.

    Attributes:
        values: one row per participant (index ``participant_id``, strings); dosage and APOE
            columns as floats, categorical ones as strings (NaN = missing in both).
        kinds: per column, ``apoe_e4`` (ε4 count), ``dosage`` or ``categorical``.
        source: the file read.
    """

    values: pd.DataFrame
    kinds: dict[str, str]
    source: str


def apoe_e4_count(value: str) -> float:
    """The number of ε4 alleles of a genotype string (``e3/e4`` → 1), or of a count; NaN when missing."""
    text = str(value).strip()
    if text.lower() in MISSING:
        return float("nan")
    if text in {"0", "1", "2"}:
        return float(text)
    match = _GENOTYPE.match(text)
    if not match:
        raise ValueError(text)
    return float([match.group(1), match.group(2)].count("4"))


def _read(path: Path) -> pd.DataFrame:
    if path.suffix.lower() in {".parquet", ".pq"}:
        if not path.is_file():
            raise AlzmriError(f"genetic table {path} does not exist")
        try:
            table = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for a broken file
            raise AlzmriError(f"cannot read genetic table {path}: {exc}") from None
        table.columns = [str(c).strip().lower() for c in table.columns]
        return table.astype(object).where(table.notna(), "").astype(str)
    table, _ = read_table(path, "genetic table")
    return table


def read_genetics(path: str | Path) -> GeneticTable:
    """Read and check a genetic table (see the module docstring)."""
    path = Path(path)
    table = _read(path)
    if "participant_id" not in table.columns:
        raise AlzmriError(f"genetic table {path} has no participant_id column (columns: {', '.join(list(table.columns)[:8])})")
    ids = table["participant_id"].astype(str).str.strip()
    if (ids == "").any():
        raise AlzmriError(f"genetic table {path}: row {int(np.flatnonzero(ids == '')[0]) + 1} has no participant_id")
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        raise AlzmriError(f"genetic table {path}: participant_id {duplicated[0]} appears more than once ({len(duplicated)} duplicated ids); one row per participant")
    table = table.drop(columns="participant_id").set_axis(ids.to_numpy()).rename_axis("participant_id")
    if table.shape[1] == 0:
        raise AlzmriError(f"genetic table {path} has no column besides participant_id")
    values, kinds = {}, {}
    for column in table.columns:
        cells = table[column].astype(str).str.strip()
        missing = cells.str.lower().isin(MISSING)
        if missing.all():
            raise AlzmriError(f"genetic table {path}: column {column} has no value (every cell missing); drop it")
        if column in _APOE_NAMES:
            try:
                values[column] = cells.map(apoe_e4_count).astype(float)
            except ValueError as exc:
                raise AlzmriError(f"genetic table {path}: column {column} has {str(exc)!r}, not an APOE genotype (e.g. e3/e4)") from None
            kinds[column] = "apoe_e4"
            continue
        numbers = pd.to_numeric(cells.where(~missing), errors="coerce")
        bad = ~missing & numbers.isna()
        if _VARIANT.match(column) or not bad.any():
            if bad.any():
                first = int(np.flatnonzero(bad.to_numpy())[0])
                raise AlzmriError(f"genetic table {path}: dosage column {column} has {cells.iloc[first]!r} for {table.index[first]}; dosages are numbers 0-2")
            out = (numbers < 0) | (numbers > 2)
            if out.any():
                first = int(np.flatnonzero(out.to_numpy())[0])
                raise AlzmriError(f"genetic table {path}: dosage column {column} has {numbers.iloc[first]:g} for {table.index[first]}; dosages lie in 0-2")
            values[column], kinds[column] = numbers.astype(float), "dosage"
        else:
            values[column], kinds[column] = cells.where(~missing, None), "categorical"
    return GeneticTable(pd.DataFrame(values, index=table.index), kinds, str(path))
