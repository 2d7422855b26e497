"""Synthetic reports: every relation to the truth is written as recorded, spans point at the text, the
stated Lung-RADS category follows the report's own sizes, and the relation mix is controllable."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from training.synthetic.config import RELATIONS, load_tables
from training.synthetic.reports import make_report

TABLES = load_tables().report
ANAT = SimpleNamespace(emphysema=0.0, coronary=())
HEDGES = re.compile(r"possible|cannot exclude|questionable|indeterminate", re.I)


def nodule(i, mean, comp="solid", lobe="RUL", shape="round", placement="central", solid=None):
    return {"id": i, "label": i, "composition": comp, "mean_diameter_mm": mean, "long_axis_mm": mean * 1.12,
            "short_axis_mm": mean * 0.88, "lobe": lobe, "side": "right" if lobe[0] == "R" else "left",
            "placement": placement, "shape": shape, "instance_number": 40 + i, "solid_component_mm": solid}


NODULES = [nodule(1, 9.3), nodule(2, 4.6, "ground-glass", "LLL", "oval", "juxtapleural"),
           nodule(3, 13.2, "part-solid", "RLL", "lobulated", "juxtavascular", solid=5.1)]


def write(relation, seed, screening=None, nodules=NODULES):
    rng = np.random.default_rng(seed)
    scr = bool(seed % 2) if screening is None else screening
    return make_report(rng, [dict(n) for n in nodules], relation=relation, screening=scr,
                       meta={"slice_thickness_mm": 1.25, "ctdi_vol_mgy": 2.0, "series_number": 3}, anat=ANAT,
                       tables=TABLES)


def check_spans(text, truth):
    for rec in truth["per_nodule"] + truth["phantom_findings"] + truth["distractors"]:
        if rec.get("span") and rec.get("text"):
            s, e = rec["span"]
            assert text[s:e] == rec["text"]


@pytest.mark.parametrize("seed", range(12))
def test_concordant_states_the_true_sizes(seed):
    text, t = write("concordant", seed)
    check_spans(text, t)
    assert t["relation"] == "concordant"
    assert all(r["mentioned"] for r in t["per_nodule"]) and len(t["per_nodule"]) == 3
    for r in t["per_nodule"]:
        assert abs(r["stated_mean_mm"] - r["true_mean_mm"]) <= 0.75
        assert str(r["image_ref"]["image"]) in r["text"]
    assert "IMPRESSION" in text.upper() and "FINDINGS" in text.upper()


@pytest.mark.parametrize("seed", range(12))
def test_undersized_crosses_a_threshold_downwards(seed):
    text, t = write("undersized", seed)
    check_spans(text, t)
    assert t["relation"] == "undersized"
    (r,) = [r for r in t["per_nodule"] if r["relation"] == "undersized"]
    assert r["nodule_id"] == t["target_nodule_id"]
    th = r["crossed_threshold_mm"]
    assert th in TABLES.size_thresholds_mm
    assert r["stated_mean_mm"] < th <= r["true_mean_mm"]
    others = [x for x in t["per_nodule"] if x is not r]
    assert all(x["relation"] == "concordant" for x in others)


@pytest.mark.parametrize("seed", range(12))
def test_oversized_crosses_a_threshold_upwards(seed):
    text, t = write("oversized", seed)
    check_spans(text, t)
    (r,) = [r for r in t["per_nodule"] if r["relation"] == "oversized"]
    assert r["true_mean_mm"] < r["crossed_threshold_mm"] <= r["stated_mean_mm"]


@pytest.mark.parametrize("seed", range(8))
def test_negative_report_with_nodules_present(seed):
    text, t = write("negative", seed)
    check_spans(text, t)
    assert t["relation"] == "negative"
    assert all(not r["mentioned"] and r["relation"] == "negated" for r in t["per_nodule"])
    assert re.search(r"no (suspicious |noncalcified )?pulmonary nodules|without focal nodule", text, re.I)
    for n in NODULES:  # no nodule's size or image is stated
        assert f"image {n['instance_number']})" not in text


@pytest.mark.parametrize("seed", range(8))
def test_missed_leaves_one_nodule_out(seed):
    text, t = write("missed", seed)
    check_spans(text, t)
    missed = [r for r in t["per_nodule"] if not r["mentioned"]]
    assert len(missed) == 1 and missed[0]["nodule_id"] == t["target_nodule_id"]
    assert sum(r["mentioned"] for r in t["per_nodule"]) == 2
    single = write("missed", seed, nodules=[NODULES[0]])[1]
    assert not single["per_nodule"][0]["mentioned"]


@pytest.mark.parametrize("seed", range(8))
def test_hedged_uses_hedging_words(seed):
    text, t = write("hedged", seed)
    check_spans(text, t)
    (r,) = [r for r in t["per_nodule"] if r.get("hedged")]
    assert HEDGES.search(r["text"])
    assert all(not HEDGES.search(x["text"]) for x in t["per_nodule"] if x is not r)


@pytest.mark.parametrize("seed", range(8))
def test_phantom_finding_is_recorded(seed):
    text, t = write("phantom", seed)
    check_spans(text, t)
    assert len(t["phantom_findings"]) == 1 and t["phantom_findings"][0]["nodule_id"] is None
    assert all(r["mentioned"] for r in t["per_nodule"])


@pytest.mark.parametrize("seed", range(10))
def test_screening_states_lung_rads_from_its_own_sizes(seed):
    text, t = write("concordant", seed, screening=True)
    assert t["screening"] and t["guideline"] == "Lung-RADS v2022"
    assert t["stated_category"] in {"1", "2", "3", "4A", "4B"}
    assert f"Lung-RADS category {t['stated_category']}" in text
    # the largest stated solid nodule is 9-10 mm (4A); the part-solid one's solid part ~5 mm (3)
    assert t["stated_category"] == "4A"
    text2, t2 = write("concordant", seed, screening=False)
    assert t2["stated_category"] is None and "Lung-RADS" not in text2
    assert "Fleischner" in text2


def test_no_nodules_concordant_report():
    text, t = write("concordant", 3, screening=True, nodules=[])
    assert t["per_nodule"] == [] and t["stated_category"] == "1"
    text, t = write("negative", 3, nodules=[])  # nothing to deny: recorded as concordant
    assert t["relation"] == "concordant"


def test_relation_mix_follows_the_config():
    from training.synthetic.study import _weighted
    rng = np.random.default_rng(0)
    draws = [_weighted(rng, TABLES.relation_weights) for _ in range(4000)]
    total = sum(TABLES.relation_weights.values())
    for rel, w in TABLES.relation_weights.items():
        assert abs(draws.count(rel) / len(draws) - w / total) < 0.03
    assert set(draws) <= set(RELATIONS)


def test_distractors_are_not_lung_nodules():
    kinds = set()
    for seed in range(40):
        text, t = write("concordant", seed)
        check_spans(text, t)
        kinds |= {d["kind"] for d in t["distractors"]}
    assert {"lymph_node", "aorta", "liver_lesion", "adrenal_nodule"} <= kinds
