"""The false-positive reduction: its scorer, its fitting, its features, and a card that carries it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from models.errors import ModelError
from models.fpr import FEATURES, FPReducer, feature_matrix, fit_logistic
from models.registry import load_spec
from pipelines.fpr import candidate_features
from training.fpr import fit, min_score_for


def _ball(shape, centre, r):
    k, j, i = np.indices(shape)
    return (k - centre[0]) ** 2 + (j - centre[1]) ** 2 + (i - centre[2]) ** 2 <= r * r


def test_logistic_fit_separates_two_groups_and_ranks_them():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (200, 3)), rng.normal(2.5, 1, (200, 3))])
    y = np.r_[np.zeros(200), np.ones(200)]
    mean, scale, coef, b = fit_logistic(x, y)
    red = FPReducer(features=list(FEATURES[:3]), mean=mean.tolist(), scale=scale.tolist(), coef=coef.tolist(),
                    intercept=b, min_score=0.5)
    p = red.score(x)
    assert ((p >= 0.5) == (y == 1)).mean() > 0.95
    assert np.all(coef > 0)  # every feature moves the score the right way


def test_min_score_keeps_the_asked_share_of_true_candidates():
    scores = np.linspace(0, 1, 101)
    y = (scores > 0.3).astype(int)
    thr = min_score_for(scores, y, 0.9)
    assert ((scores >= thr) & (y == 1)).sum() >= 0.9 * y.sum()
    assert thr > 0.3


def test_fit_refuses_too_few_candidates():
    from pipelines.errors import ConfigError

    rows = [dict.fromkeys(FEATURES, 0.0)] * 4
    with pytest.raises(ConfigError, match="too few candidates"):
        fit(rows, np.array([1, 0, 1, 0]), np.array([1, 1, 2, 2]))


def test_a_reducer_with_mismatched_lengths_or_unknown_features_is_refused():
    with pytest.raises(ValueError, match="same length"):
        FPReducer(features=["hu_mean"], mean=[0, 1], scale=[1], coef=[1], intercept=0, min_score=0.5)
    with pytest.raises(ValueError, match="unknown features"):
        FPReducer(features=["colour"], mean=[0], scale=[1], coef=[1], intercept=0, min_score=0.5)


def test_a_card_with_a_broken_fp_reduction_gives_a_clear_model_error(tmp_path):
    card = yaml.safe_load(load_spec(None).model_dump_json())
    card["fp_reduction"] = {"features": ["hu_mean"], "mean": [0], "scale": [1], "coef": [1, 2], "intercept": 0,
                            "min_score": 0.5}
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="fp_reduction"):
        load_spec(str(p))


def test_features_tell_a_round_nodule_from_a_vessel_segment():
    sp = (0.8, 0.8, 1.0)  # x, y, z mm
    shape = (40, 48, 48)
    hu = np.full(shape, -850, dtype=np.int16)
    lung = np.ones(shape, dtype=np.uint8)
    ball = _ball(shape, (20, 24, 24), 6)
    hu[ball] = 20
    tube = np.zeros(shape, bool)
    tube[18:22, 4:44, 10:13] = True  # a vessel running along j
    hu[tube] = 30
    vox = float(np.prod(sp))

    def feats(m):
        idx = np.argwhere(m)
        lo, hi = idx.min(0), idx.max(0) + 1
        crop = m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        return candidate_features(crop, tuple(int(v) for v in lo), hu, sp, lung, 0.9, 0.7, float(m.sum()) * vox)

    fb, fv = feats(ball), feats(tube)
    assert set(fb) == set(FEATURES)
    assert fb["compactness"] > 0.7 > fv["compactness"]
    assert fv["elongation"] > 3 * fb["elongation"]
    assert fb["dense_fraction"] == 1.0 and fb["hu_mean"] == pytest.approx(20)
    assert fb["shell_hu_mean"] < -800  # air around a nodule ...
    assert fb["lung_depth_mm"] > 10  # ... deep in the lung
    row = feature_matrix([fb, fv])
    assert row.shape == (2, len(FEATURES))


def test_fine_and_coarse_probabilities_fuse_inside_the_lung_box_only():
    from pipelines.infer import _fuse

    fine = np.full((4, 4, 4), 0.2, dtype=np.float32)
    coarse_up = np.full((10, 10, 10), 0.9, dtype=np.float32)  # on the lung box (0..10)^3
    box = ((8, 12), (0, 4), (0, 4))  # half inside the lung box along k
    mx = _fuse(fine, coarse_up, box, ((0, 10),) * 3, "max")
    assert np.all(mx[:2] == np.float32(0.9)) and np.all(mx[2:] == np.float32(0.2))
    mean = _fuse(fine, coarse_up, box, ((0, 10),) * 3, "mean")
    assert np.allclose(mean[:2], 0.55) and np.allclose(mean[2:], 0.1)


def test_the_default_card_carries_its_false_positive_reduction():
    spec = load_spec(None)
    assert spec.fp_reduction is not None
    assert spec.fp_reduction.fitted_on["studies"] >= 20
    assert 0.0 < spec.fp_reduction.min_score < 1.0


@pytest.mark.parametrize("seeds, message", [
    ("abc", "START:STOP"),
    ("3000:3010,full:3100", "START:STOP"),
    ("3000:2990", "START:STOP"),
    ("nosuch:3000:3010", "unknown synthetic preset"),
    ("900000:900002", "evaluation seeds"),
    ("1000:1002", "trained the network"),
    ("3000:3002,full:1105:1107", "trained the network"),  # the thin-slice studies the network was trained on as well
])
def test_train_fpr_refuses_bad_or_forbidden_seeds_in_one_line(seeds, message, capsys):
    from serving.cli import main

    assert main(["train-fpr", "--seeds", seeds, "--no-write"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def _tree_data(n, seed):
    """Twelve features; the label depends on an interaction a linear model cannot represent; a few missing values."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    x[rng.random(x.shape) < 0.01] = np.nan
    y = ((x[:, 0] > 0.2) ^ (np.nan_to_num(x[:, 3]) < -0.5)).astype(int)
    return x, y


def test_exported_trees_score_exactly_as_scikit_learn_does(tmp_path):
    from sklearn.ensemble import HistGradientBoostingClassifier

    from models.fpr import TreeReducer, export_trees
    from training.fpr import write_trees

    x, y = _tree_data(2000, 0)
    gb = HistGradientBoostingClassifier(max_iter=40, max_leaf_nodes=15, random_state=0, early_stopping=False).fit(x, y)
    path = tmp_path / "t.fpr-trees.json"
    digest = write_trees(export_trees(gb, list(FEATURES)), path)
    red = TreeReducer(kind="trees", features=list(FEATURES), trees=str(path), trees_sha256=digest, min_score=0.5)
    xt, yt = _tree_data(500, 1)
    assert np.abs(red.score(xt) - gb.predict_proba(xt)[:, 1]).max() < 1e-12  # missing values included
    assert ((red.score(xt) >= 0.5) == (yt == 1)).mean() > 0.9


def test_a_trees_file_that_is_missing_altered_or_malformed_gives_a_clear_model_error(tmp_path):
    from models.fpr import TreeReducer, sha256_file

    path = tmp_path / "t.json"
    red = TreeReducer(kind="trees", features=["hu_mean"], trees=str(path), trees_sha256="0" * 64, min_score=0.5)
    with pytest.raises(ModelError, match="missing"):
        red.score(np.zeros((1, 1)))
    path.write_text('{"format": "preread-fpr-trees/1"}')
    with pytest.raises(ModelError, match="sha256 .* the model card says"):
        red.score(np.zeros((1, 1)))
    red = TreeReducer(kind="trees", features=["hu_mean"], trees=str(path), trees_sha256=sha256_file(path),
                      min_score=0.5)
    with pytest.raises(ModelError, match="malformed"):
        red.score(np.zeros((1, 1)))


def test_trees_are_fitted_written_beside_a_trial_card_and_read_back_through_it(tmp_path):
    from training.fpr import fit, write_to_card

    x, y = _tree_data(1500, 2)
    rows = [dict(zip(FEATURES, r)) for r in np.nan_to_num(x)]
    owner = np.repeat(np.arange(30), 50)
    reducer, report = fit(rows, y, owner, kind="trees", keep_sensitivity=0.95, tree_params={"max_iter": 30})
    assert report["kind"] == "trees" and report["min_score_from"] == "out-of-fold scores"
    assert report["cv2_true_kept_fraction"] > 0.85
    card = yaml.safe_load(load_spec(None).model_dump_json())
    card["default"] = False
    p = tmp_path / "trial.yaml"
    p.write_text(yaml.safe_dump(card))
    write_to_card(str(p), reducer)
    assert (tmp_path / "trial.fpr-trees.json").is_file()  # beside the trial card, never over a shipped file
    spec = load_spec(str(p))
    assert spec.fp_reduction.kind == "trees" and spec.fp_reduction.min_score == reducer["min_score"]
    xt, yt = _tree_data(400, 3)
    kept = spec.fp_reduction.score(np.nan_to_num(xt)) >= spec.fp_reduction.min_score
    assert kept[yt == 1].mean() > 0.85 and kept[yt == 0].mean() < 0.3


def test_a_card_whose_trees_file_was_altered_fails_before_any_study_is_read(tmp_path):
    from pipelines.errors import ModelError as PipelinesModelError
    from pipelines.infer import get_model

    trees = tmp_path / "x.fpr-trees.json"
    trees.write_text("{}")
    card = yaml.safe_load(load_spec(None).model_dump_json())
    card["default"] = False
    card["fp_reduction"] = {"kind": "trees", "features": ["hu_mean"], "trees": str(trees),
                            "trees_sha256": "a" * 64, "min_score": 0.5}
    p = tmp_path / "altered.yaml"
    p.write_text(yaml.safe_dump(card))
    with pytest.raises(PipelinesModelError, match="sha256"):
        get_model(str(p))
    card["fp_reduction"]["kind"] = "forest"
    p.write_text(yaml.safe_dump(card))
    with pytest.raises(ModelError, match="fp_reduction"):
        load_spec(str(p))
