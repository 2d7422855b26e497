"""The false-positive reduction scorer of a model card (``fp_reduction``): a logistic regression over
candidate features, fitted by ``training/fpr.py`` and applied by ``pipelines/fpr.py``.

The classical CAD pattern: a sensitive detector, then a candidate classifier. Its coefficients live in
the model card, beside the weights they were fitted for. A candidate's score is the probability that it
is a true nodule.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

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


class FPReducer(BaseModel):
    """Logistic regression over :data:`FEATURES` (standardised with ``mean``/``scale``)."""

    model_config = ConfigDict(extra="forbid")
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
        unknown = set(self.features) - set(FEATURES)
        if unknown:
            raise ValueError(f"fp_reduction: unknown features {sorted(unknown)}; known: {', '.join(FEATURES)}")
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for feature rows ``x`` [n, len(features)] (columns in ``self.features`` order)."""
        z = (np.asarray(x, dtype=np.float64) - np.asarray(self.mean)) / np.asarray(self.scale)
        return 1.0 / (1.0 + np.exp(-(z @ np.asarray(self.coef) + self.intercept)))


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
