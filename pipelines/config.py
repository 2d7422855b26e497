"""Reading a YAML file of ``configs/`` into a typed (pydantic) model, with one kind of error for every stage."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from pipelines.errors import ConfigError
from pipelines.paths import config_path

M = TypeVar("M", bound=BaseModel)


def load_yaml_config(model: type[M], name: str, path: str | Path | None = None, *, what: str) -> M:
    """``configs/<name>`` (or ``path``) validated as ``model``; a missing, unparsable or invalid file is a
    :class:`ConfigError` that names the file and the first offending key."""
    p = Path(path) if path is not None else config_path(name)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError as err:
        raise ConfigError(f"{what} not found: {p}", hint=f"restore configs/{name}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{what} {p} is not valid YAML: {' '.join(str(err).split())}") from err
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(x) for x in first["loc"]) or "(top level)"
        raise ConfigError(f"{what} {p} is invalid: {loc}: {first['msg']}") from err
