"""The false-positive reduction scorer of a model card (``fp_reduction``), fitted by ``training/fpr.py`` and
applied by ``pipelines/fpr.py``: a logistic regression over candidate features (``kind: logistic``, its
coefficients in the card), or gradient-boosted decision trees over the same features (``kind: trees``, the
trees in a JSON file beside the weights, checked against the sha256 the card gives).

The classical CAD pattern: a sensitive detector, then a candidate classifier. A candidate's score is the
probability that it is a true nodule. Scoring needs numpy only; fitting the trees needs scikit-learn
(``training/fpr.py``), whose fitted ensemble :func:`export_trees` turns into the file format read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, model_validator

from models.errors import ModelError
from models.weights import sha256_file

REPO_ROOT = Path(__file__).resolve().parents[1]
TREES_FORMAT = "preread-fpr-trees/1"

FEATURES: tuple[str, ...] = (
    "network_confidence",  # max fine probability in the component
    "mean_probability",  # mean fine probability over the component
    "log_volume_mm3",
    "compactness",  # sphere-equivalent diameter / largest extent (1 for a sphere, small for a vessel)
    "elongation",  # sqrt of the ratio of the two largest principal variances
    "hu_mean",
    "hu_std",
    "hu_p90",
    "dense_fraction",  # fraction of voxels above -300 HU
    "shell_hu_mean",  # mean HU of a 2 mm shell around the component (vessel or wall continuing outwards)
    "shell_dense_fraction",  # fraction of that shell above -300 HU
    "lung_depth_mm",  # distance from the centre to the edge of the lung mask (0 outside)
)


def _check_features(features: list[str]) -> None:
    unknown = set(features) - set(FEATURES)
    if unknown:
        raise ValueError(f"fp_reduction: unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")


class FPReducer(BaseModel):
    """Logistic regression over :data:`FEATURES` (standardised with ``mean``/``scale``)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["logistic"] = "logistic"
    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    min_score: float = Field(ge=0, le=1)  # candidates scoring below this are dropped
    fitted_on: dict = Field(default_factory=dict)  # seeds, candidate counts, cross-validated metrics

    @model_validator(mode="after")
    def _check(self) -> FPReducer:
        n = len(self.features)
        if not (len(self.mean) == len(self.scale) == len(self.coef) == n):
            raise ValueError("fp_reduction: features, mean, scale and coef must have the same length")
        _check_features(self.features)
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for feature rows ``x`` [n, len(features)] (columns in ``self.features`` order)."""
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))


class TreeReducer(BaseModel):
    """Gradient-boosted binary decision trees over :data:`FEATURES`, read from ``trees`` (a JSON file in the
    :data:`TREES_FORMAT`, relative to the repository root or absolute) after its sha256 is checked.

    A candidate's log-odds are the ``baseline`` plus the sum over the trees of the leaf it reaches (at each split
    ``x[feature] <= threshold`` goes left; a missing value goes where ``missing_left`` says); its score is the
    logistic of that, as scikit-learn's ``HistGradientBoostingClassifier.predict_proba`` gives it.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["trees"]
    features: list[str]
    trees: str
    trees_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    min_score: float = Field(ge=0, le=1)
    fitted_on: dict = Field(default_factory=dict)
    _loaded: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> TreeReducer:
        _check_features(self.features)
        return self

    def path(self) -> Path:
        p = Path(self.trees)
        return p if p.is_absolute() else REPO_ROOT / p

    def load(self) -> dict[str, Any]:
        """The trees as flat arrays (read and checked once; :class:`ModelError` on a missing, altered or
        malformed file)."""
        if self._loaded is None:
            self._loaded = read_trees(self.path(), self.trees_sha256, self.features)
        return self._loaded

    def score(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for feature rows ``x`` [n, len(features)] (columns in ``self.features`` order)."""
        t = self.load()
        x = np.asarray(x, dtype=np.float64).reshape(-1, len(self.features))
        n = len(x)
        node = np.broadcast_to(t["roots"], (n, len(t["roots"]))).copy()
        rows = np.arange(n)[:, None]
        for _ in range(t["max_depth"] + 1):
            leaf = t["is_leaf"][node]
            if leaf.all():
                break
            v = x[rows, t["feature"][node]]
            left = np.where(np.isnan(v), t["missing_left"][node], v <= t["threshold"][node])
            node = np.where(leaf, node, np.where(left, t["left"][node], t["right"][node]))
        raw = t["baseline"] + t["value"][node].sum(axis=1)
        return 1.0 / (1.0 + np.exp(-raw))


def _reducer_kind(v: Any) -> str:
    kind = v.get("kind", "logistic") if isinstance(v, dict) else getattr(v, "kind", "logistic")
    return kind if kind in ("logistic", "trees") else "logistic"  # an unknown kind fails on the logistic model


Reducer = Annotated[Union[Annotated[FPReducer, Tag("logistic")], Annotated[TreeReducer, Tag("trees")]],
                    Discriminator(_reducer_kind)]


def read_trees(path: Path, sha256: str | None, features: list[str]) -> dict[str, Any]:
    """A trees file as flat numpy arrays with global node indices; its hash and features checked."""
    if not path.is_file():
        raise ModelError(f"fp_reduction trees file {path} is missing")
    if sha256 is not None:
        got = sha256_file(path)
        if got != sha256:
            raise ModelError(f"fp_reduction trees file {path} has sha256 {got[:12]}..., the model card says "
                             f"{sha256[:12]}...: the file was changed or belongs to another card")
    try:
        doc = json.loads(path.read_text())
        if doc.get("format") != TREES_FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {TREES_FORMAT!r}")
        if list(doc["features"]) != list(features):
            raise ValueError(f"features {doc['features']} differ from the card's {features}")
        nodes = doc["nodes"]
        t: dict[str, Any] = {
            "feature": np.asarray(nodes["feature"], dtype=np.int64),
            "threshold": np.asarray(nodes["threshold"], dtype=np.float64),
            "left": np.asarray(nodes["left"], dtype=np.int64),
            "right": np.asarray(nodes["right"], dtype=np.int64),
            "missing_left": np.asarray(nodes["missing_left"], dtype=bool),
            "is_leaf": np.asarray(nodes["is_leaf"], dtype=bool),
            "value": np.asarray(nodes["value"], dtype=np.float64),
            "roots": np.asarray(doc["roots"], dtype=np.int64),
            "baseline": float(doc["baseline"]),
            "max_depth": int(doc["max_depth"]),
        }
        n = len(t["value"])
        if not all(len(t[k]) == n for k in ("feature", "threshold", "left", "right", "missing_left", "is_leaf")):
            raise ValueError("node arrays differ in length")
        inner = ~t["is_leaf"]
        if (np.any(t["roots"] < 0) or np.any(t["roots"] >= n)
                or np.any((t["left"][inner] < 0) | (t["left"][inner] >= n))
                or np.any((t["right"][inner] < 0) | (t["right"][inner] >= n))
                or np.any((t["feature"][inner] < 0) | (t["feature"][inner] >= len(features)))):
            raise ValueError("a node points outside the trees or the features")
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"fp_reduction trees file {path} is malformed: {err}") from err
    return t


def export_trees(model: Any, features: list[str]) -> dict[str, Any]:
    """The :data:`TREES_FORMAT` document of a fitted scikit-learn ``HistGradientBoostingClassifier`` (binary,
    numeric features). Leaf values already carry the learning rate; categorical splits are refused."""
    baseline = float(np.asarray(model._baseline_prediction).ravel()[0])
    cols: dict[str, list] = {k: [] for k in ("feature", "threshold", "left", "right", "missing_left", "is_leaf",
                                             "value")}
    roots, max_depth = [], 0
    for (pred,) in model._predictors:
        nd = pred.nodes
        if np.any(nd["is_categorical"]):
            raise ValueError("categorical splits are not supported")
        off = len(cols["value"])
        roots.append(off)
        leaf = nd["is_leaf"].astype(bool)
        cols["feature"] += [int(f) if not lf else 0 for f, lf in zip(nd["feature_idx"], leaf)]
        cols["threshold"] += [float(v) if not lf else 0.0 for v, lf in zip(nd["num_threshold"], leaf)]
        cols["left"] += [int(v) + off if not lf else -1 for v, lf in zip(nd["left"], leaf)]
        cols["right"] += [int(v) + off if not lf else -1 for v, lf in zip(nd["right"], leaf)]
        cols["missing_left"] += [int(v) for v in nd["missing_go_to_left"]]
        cols["is_leaf"] += [int(v) for v in leaf]
        cols["value"] += [float(v) if lf else 0.0 for v, lf in zip(nd["value"], leaf)]
        max_depth = max(max_depth, int(nd["depth"].max()))
    return {"format": TREES_FORMAT, "features": list(features), "baseline": baseline, "max_depth": max_depth,
            "trees": len(roots), "roots": roots, "nodes": cols}


def feature_matrix(rows: list[dict[str, float]], features: list[str] | tuple[str, ...] = FEATURES) -> np.ndarray:
    return np.asarray([[r[f] for f in features] for r in rows], dtype=np.float64).reshape(len(rows), len(features))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, iters: int = 50) -> tuple[np.ndarray, np.ndarray,
                                                                                             np.ndarray, float]:
    """(mean, scale, coef, intercept) of an L2-regularised logistic regression fitted by Newton's method."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    reg = np.full(z.shape[1], l2)
    reg[-1] = 0.0  # the intercept is not shrunk
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        g = z.T @ (p - y) + reg * w
        h = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg) + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return mean, scale, w[:-1], float(w[-1])
