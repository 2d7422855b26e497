"""Helpers shared by the CLI subcommands: JSON output (``--json PATH``, ``-`` for stdout)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel


def _default(obj: Any):
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_jsonable(obj: Any) -> Any:
    """Round-trip through json so numpy scalars, pydantic models and NaN become plain JSON."""
    text = json.dumps(obj, default=_default, allow_nan=True)
    data = json.loads(text)
    return _nan_to_none(data)


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def write_json(obj: Any, path: str | None) -> None:
    """Write ``obj`` as indented JSON to ``path``; ``-`` writes to stdout; ``None`` writes nothing."""
    if path is None:
        return
    text = json.dumps(to_jsonable(obj), indent=2)
    if path == "-":
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    else:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text + "\n")
