"""Fit the false-positive reduction of a model card (``preread train-fpr``).

Runs the card's detector (network and candidate filters, no second stage) on synthetic studies from
seeds the network was not trained on (its outputs on its own training studies are over-confident),
labels each candidate true when it hits a generated nodule (LUNA16 rule: within the nodule's radius),
fits a scorer on the candidates' features, picks ``min_score`` as the highest score that keeps
``keep_sensitivity`` of the true candidates, and writes the result into the card's ``fp_reduction`` block.
Two scorers (``kind``):

- ``logistic``: :func:`models.fpr.fit_logistic`; ``min_score`` from its scores on the fitting set;
- ``trees``: scikit-learn's ``HistGradientBoostingClassifier`` (a training dependency only), exported with
  :func:`models.fpr.export_trees` to a JSON file beside the weights whose sha256 goes into the card; the trees
  fit their own candidates closely, so ``min_score`` comes from the study-wise out-of-fold scores instead.

Study-wise two-fold cross-validation is reported beside either. Evaluation seeds (>= 900000) and the
network's training seeds are refused.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from models.fpr import REPO_ROOT, FEATURES, FPReducer, TreeReducer, export_trees, feature_matrix, fit_logistic
from models.registry import load_spec, models_dir
from models.weights import sha256_file
from pipelines.errors import ConfigError
from pipelines.infer import detect_nodules
from training.evaluate import RefNodule, training_seeds, ScanDetections, _synthetic_study, candidate_centres_mm, match_scan

log = logging.getLogger(__name__)

EVAL_SEED_MIN = 900000


def check_seeds(seeds: list[int]) -> None:
    """Refuse evaluation seeds and the network's own training and validation seeds."""
    bad = [s for s in seeds if s >= EVAL_SEED_MIN]
    if bad:
        raise ConfigError(f"seeds {bad[:5]} are evaluation seeds (>= {EVAL_SEED_MIN}); fit on other seeds")
    used = sorted(training_seeds() & set(seeds))
    if used:
        raise ConfigError(f"seeds {used[:5]} trained the network; fit the false-positive reduction on other seeds")


def parse_seed_groups(text: str, default_preset: str = "fast") -> list[tuple[str, list[int]]]:
    """``"3000:3030,full:3100:3104"`` → [(preset, seeds), ...]; every group's preset and seeds are checked
    (known preset, START < STOP, no evaluation or training seeds) before anything runs."""
    from training.synthetic.config import load_tables

    presets = load_tables().presets
    groups = []
    for part in text.split(","):
        bits = part.strip().split(":")
        try:
            if len(bits) not in (2, 3):
                raise ValueError
            a, b = int(bits[-2]), int(bits[-1])
            if b <= a:
                raise ValueError
        except ValueError as err:
            raise ConfigError(f"--seeds must be [PRESET:]START:STOP groups (integers, START < STOP), "
                              f"got {part!r}") from err
        preset = bits[0] if len(bits) == 3 else default_preset
        if preset not in presets:
            raise ConfigError(f"unknown synthetic preset {preset!r} in --seeds; allowed: {sorted(presets)}")
        check_seeds(list(range(a, b)))
        groups.append((preset, list(range(a, b))))
    return groups


def collect_groups(model: str, groups: list[tuple[str, list[int]]], *, cache_dir: Path | str | None = None,
                   device: torch.device | None = None) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    """:func:`collect` over several (preset, seeds) groups, concatenated."""
    rows: list[dict[str, float]] = []
    ys, owners = [], []
    for preset, seeds in groups:
        r, y, o = collect(model, seeds, preset=preset, cache_dir=cache_dir, device=device)
        rows += r
        ys.append(y)
        owners.append(o)
    return rows, np.concatenate(ys), np.concatenate(owners)


def collect(model: str, seeds: list[int], *, preset: str = "fast", cache_dir: Path | str | None = None,
            device: torch.device | None = None) -> tuple[list[dict[str, float]], np.ndarray, np.ndarray]:
    """(feature rows, labels 0/1, the seed of each row) of every candidate the detector gives on ``seeds``."""
    check_seeds(seeds)
    rows: list[dict[str, float]] = []
    labels: list[int] = []
    owner: list[int] = []
    for seed in seeds:
        t = time.perf_counter()
        st = _synthetic_study(int(seed), preset, cache_dir)
        det = detect_nodules(st.volume, np.asarray(st.lung_labels), model=model, device=device, raw_candidates=True)
        refs = [RefNodule(center_mm=st.volume.voxel_to_mm(n["center_voxel"]),
                          diameter_mm=max(float(n["mean_diameter_mm"]), 1e-3), counted=True)
                for n in st.truth["nodules"]]
        hit, _ = match_scan(ScanDetections(candidate_centres_mm(st.volume, det.candidates),
                                           [c.confidence for c in det.candidates], refs))
        for c, h in zip(det.candidates, hit):
            rows.append(dict(c.features or {}))
            labels.append(int(h is not None))
            owner.append(int(seed))
        log.info("seed %d: %d candidates (%d true) in %.1f s", seed, len(det.candidates),
                 sum(h is not None for h in hit), time.perf_counter() - t)
    return rows, np.asarray(labels, dtype=np.int64), np.asarray(owner, dtype=np.int64)


def min_score_for(scores: np.ndarray, y: np.ndarray, keep_sensitivity: float) -> float:
    """The highest threshold that keeps at least ``keep_sensitivity`` of the true candidates."""
    pos = np.sort(scores[y == 1])[::-1]
    if len(pos) == 0:
        return 0.5
    k = max(1, int(np.ceil(keep_sensitivity * len(pos))))
    return float(pos[k - 1])


# The trees' settings (scikit-learn HistGradientBoostingClassifier); not tuned: chosen once, on the tuning sets'
# evidence that trees rank small nodules better than the logistic model
# (training/logs/nodule-unet-s-gbm.experiment.json).
TREE_PARAMS: dict[str, Any] = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 10,
                               "random_state": 0}


def _fit_scorer(x: np.ndarray, y: np.ndarray, kind: str, l2: float, features: tuple[str, ...],
                tree_params: dict[str, Any]) -> tuple[Any, Any]:
    """(reducer or fitted trees, a function scoring feature rows) of one fit."""
    if kind == "logistic":
        m, s, c, b = fit_logistic(x, y, l2=l2)
        red = FPReducer(features=list(features), mean=m.tolist(), scale=s.tolist(), coef=c.tolist(), intercept=b,
                        min_score=0.0)
        return red, red.score
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ConfigError("fitting a trees reduction needs scikit-learn (pip install scikit-learn)") from err
    gb = HistGradientBoostingClassifier(early_stopping=False, **tree_params).fit(x, y)
    return gb, lambda z: gb.predict_proba(z)[:, 1]


def _two_folds(owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Study-wise folds: every other study (sorted by seed) in the first."""
    fold = np.isin(owner, np.unique(owner)[::2])
    return fold, ~fold


def _min_score(x: np.ndarray, y: np.ndarray, owner: np.ndarray, kind: str, l2: float, features: tuple[str, ...],
               params: dict[str, Any], keep_sensitivity: float, score) -> float:
    """``min_score`` for ``score``, a scorer fitted on these rows: from its own scores (logistic), or from
    study-wise two-fold out-of-fold scores (trees: they fit their own rows too closely for their scores to set it)."""
    if kind == "logistic":
        return min_score_for(score(x), y, keep_sensitivity)
    oof = np.zeros(len(y))
    for test in _two_folds(owner):
        _, score = _fit_scorer(x[~test], y[~test], kind, l2, features, params)
        oof[test] = score(x[test])
    return min_score_for(oof, y, keep_sensitivity)


def fit(rows: list[dict[str, float]], y: np.ndarray, owner: np.ndarray, *, l2: float = 1.0,
        keep_sensitivity: float = 0.98, features: tuple[str, ...] = FEATURES, kind: str = "logistic",
        tree_params: dict[str, Any] | None = None) -> tuple[FPReducer | dict[str, Any], dict[str, Any]]:
    """The fitted scorer and a report with study-wise two-fold cross-validation.

    ``kind`` "logistic": the :class:`FPReducer`. ``kind`` "trees": a dict with the trees document
    (:func:`models.fpr.export_trees`) and the fields of a :class:`TreeReducer` but its file (see
    :func:`write_to_card`)."""
    if kind not in ("logistic", "trees"):
        raise ConfigError(f"unknown false-positive reduction kind {kind!r}; allowed: logistic, trees")
    if len(rows) < 10 or y.sum() < 3 or (1 - y).sum() < 3:
        raise ConfigError(f"too few candidates to fit a false-positive reduction ({len(rows)}, {int(y.sum())} true)")
    params = {**TREE_PARAMS, **(tree_params or {})}
    x = feature_matrix(rows, features)
    studies = np.unique(owner)
    cv = []
    for test in _two_folds(owner):
        _, score = _fit_scorer(x[~test], y[~test], kind, l2, features, params)
        thr = _min_score(x[~test], y[~test], owner[~test], kind, l2, features, params, keep_sensitivity, score)
        kept = score(x[test]) >= thr
        cv.append({"true_kept": int((kept & (y[test] == 1)).sum()), "true": int((y[test] == 1).sum()),
                   "false_kept": int((kept & (y[test] == 0)).sum()), "false": int((y[test] == 0).sum()),
                   "studies": int(len(np.unique(owner[test])))})
    model, score = _fit_scorer(x, y, kind, l2, features, params)
    thr = _min_score(x, y, owner, kind, l2, features, params, keep_sensitivity, score)
    tk = sum(f["true_kept"] for f in cv)
    fk = sum(f["false_kept"] for f in cv)
    report = {"kind": kind, "candidates": int(len(y)), "true": int(y.sum()), "studies": int(len(studies)),
              "seeds": [int(studies.min()), int(studies.max())], "keep_sensitivity": keep_sensitivity,
              "cv2_true_kept_fraction": round(tk / max(int(y.sum()), 1), 4),
              "cv2_false_kept_per_study": round(fk / max(len(studies), 1), 3),
              "false_per_study_before": round(float((y == 0).sum()) / max(len(studies), 1), 3)}
    if kind == "logistic":
        report["l2"] = l2
        return model.model_copy(update={"min_score": round(thr, 6), "fitted_on": report}), report
    import sklearn

    report.update({"trees": params, "scikit_learn": sklearn.__version__, "min_score_from": "out-of-fold scores"})
    return {"document": export_trees(model, list(features)), "features": list(features),
            "min_score": round(thr, 6), "fitted_on": report}, report


def write_trees(document: dict[str, Any], path: Path) -> str:
    """Write a trees document (compact JSON) and return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, separators=(",", ":")) + "\n")
    return sha256_file(path)


def write_to_card(model: str, reducer: FPReducer | dict[str, Any]) -> Path:
    """Put ``reducer`` in the card's ``fp_reduction`` block (the rest of the card is kept as it is). A trees
    reducer (the dict :func:`fit` returns) is first written to a file, its path and sha256 going into the block:
    beside the card's weights as ``<name>.fpr-trees.json`` for a card of the models folder, beside the card
    (``<card>.fpr-trees.json``) for a card elsewhere (a trial card never overwrites a shipped file)."""
    spec = load_spec(model)
    path = Path(model) if model.endswith((".yaml", ".yml")) else models_dir() / f"{spec.name}.yaml"
    card = yaml.safe_load(path.read_text())
    if isinstance(reducer, dict):
        shipped = path.resolve().parent == models_dir().resolve()
        trees = (spec.weights.path().parent / f"{spec.name}.fpr-trees.json" if shipped
                 else path.with_suffix(".fpr-trees.json"))
        digest = write_trees(reducer["document"], trees)
        try:
            where = str(trees.resolve().relative_to(REPO_ROOT))
        except ValueError:
            where = str(trees.resolve())
        reducer = TreeReducer(kind="trees", features=reducer["features"], trees=where, trees_sha256=digest,
                              min_score=reducer["min_score"], fitted_on=reducer["fitted_on"])
    card["fp_reduction"] = reducer.model_dump(mode="json")
    path.write_text(yaml.safe_dump(card, sort_keys=False, width=110))
    return path
