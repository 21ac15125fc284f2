"""Values made ready for a strict JSON file: numpy scalars as Python ones, NaN and ±inf as null."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def strict_json(value: Any) -> Any:
    """``value`` with numpy scalars as Python ones and non-finite floats as None, through dicts, lists and tuples.

    ``json.dumps`` writes NaN as the bare word ``NaN``, which strict JSON readers (browsers,
    ``jq``) refuse.
    """
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
