"""Guideline tables: the edges of Fleischner 2017 and Lung-RADS v2022 as published, and the selection rule."""

from __future__ import annotations

import itertools

import pytest

from pipelines.errors import ConfigError, GuidelineError
from pipelines.guidelines import COMPOSITIONS, load_guideline, round_half_up, select_guideline
from pipelines.types import ReportContext


@pytest.fixture(scope="module")
def fl():
    return load_guideline("fleischner_2017")


@pytest.fixture(scope="module")
def lr():
    return load_guideline("lung_rads_2022")


def test_tables_name_their_sources(fl, lr):
    assert any("Radiology 2017;284" in s for s in fl.sources)
    assert any("Radiology 2017;285" in s for s in fl.sources)  # the measurement statement (rounding)
    assert any("CHEST 2024;165" in s for s in lr.sources)


def test_round_half_up_on_decimal_text():
    assert round_half_up(5.5, 0) == 6.0 and round_half_up(4.5, 0) == 5.0  # not banker's rounding
    assert round_half_up(5.95, 1) == 6.0 and round_half_up(5.94, 1) == 5.9
    assert round_half_up(8.45, 1) == 8.5  # 8.45 is 8.4499999... in binary; radiologists read 8.45


# Fleischner 2017 rounds the mean to the nearest mm: "< 6 mm" is a rounded 5 mm or less, "> 8 mm" 9 mm or more.
@pytest.mark.parametrize("mean, code, used, short", [
    (5.0, "fleischner:solid:<6", 5.0, "no routine follow-up"),
    (5.4, "fleischner:solid:<6", 5.0, "no routine follow-up"),
    (5.5, "fleischner:solid:6-8", 6.0, "CT at 6–12 months"),
    (6.0, "fleischner:solid:6-8", 6.0, "CT at 6–12 months"),
    (8.0, "fleischner:solid:6-8", 8.0, "CT at 6–12 months"),
    (8.4, "fleischner:solid:6-8", 8.0, "CT at 6–12 months"),
    (8.5, "fleischner:solid:>8", 9.0, "consider CT at 3 months, PET/CT or tissue sampling"),
    (9.0, "fleischner:solid:>8", 9.0, "consider CT at 3 months, PET/CT or tissue sampling"),
])
def test_fleischner_single_solid_low_risk_rounding_edges(fl, mean, code, used, short):
    cat = fl.categorize("solid", mean)
    assert (cat.code, cat.size_used_mm, cat.recommendation_short) == (code, used, short)


def test_fleischner_risk_and_multiplicity(fl):
    assert fl.categorize("solid", 4, risk="high").recommendation == "Optional CT at 12 months"
    assert fl.categorize("solid", 7, risk="high").recommendation == "CT at 6-12 months, then CT at 18-24 months"
    assert fl.categorize("solid", 7, count=3).recommendation.startswith("CT at 3-6 months, then consider")
    # published Table 1: multiple > 8 mm, high risk: "CT at 3-6 months, then at 18-24 months" (no "consider")
    multiple_high = fl.categorize("solid", 12, count=2, risk="high")
    assert multiple_high.recommendation == "CT at 3-6 months, then CT at 18-24 months"
    assert fl.categorize("solid", 12, count=2).rank < fl.categorize("solid", 12).rank  # single > 8 mm: PET/tissue
    with pytest.raises(GuidelineError, match="risk"):
        fl.categorize("solid", 7, risk="medium")


def test_fleischner_subsolid(fl):
    assert fl.categorize("ground-glass", 5.4).recommendation == "No routine follow-up"
    assert fl.categorize("ground-glass", 5.5).code == "fleischner:ground-glass:>=6"
    ps = fl.categorize("part-solid", 7, solid_component_mm=3)
    assert ps.code == "fleischner:part-solid:>=6" and "annual CT for 5 years" in ps.recommendation
    assert fl.categorize("part-solid", 5).rank == 0
    # multiple subsolid < 6 mm is NOT dismissed (CT at 3-6 months), unlike a single one
    assert fl.categorize("ground-glass", 4, count=3).recommendation.startswith("CT at 3-6 months; if stable")
    assert fl.categorize("part-solid", 10, count=2).code == "fleischner:subsolid-multiple:>=6"


def test_fleischner_calcified_is_benign(fl):
    cat = fl.categorize("calcified", 14)
    assert cat.code == "fleischner:calcified" and cat.rank == 0


def test_fleischner_notes_growth_without_a_row(fl):
    cat = fl.categorize("solid", 5, growing=True)
    assert cat.code == "fleischner:solid:<6" and any("first detection" in n for n in cat.notes)
    assert fl.is_growth(7.0, 5.0) and not fl.is_growth(6.9, 5.0)  # "about 2 mm or more"


# Lung-RADS keeps one decimal: 5.9 is category 2, 6.0 is category 3; 5.95 rounds to 6.0.
@pytest.mark.parametrize("mean, code, used", [
    (5.9, "2", 5.9), (5.94, "2", 5.9), (5.95, "3", 6.0), (6.0, "3", 6.0), (7.9, "3", 7.9), (7.96, "4A", 8.0),
    (8.0, "4A", 8.0), (14.9, "4A", 14.9), (15.0, "4B", 15.0), (40.0, "4B", 40.0),
])
def test_lung_rads_solid_baseline_edges(lr, mean, code, used):
    cat = lr.categorize("solid", mean)
    assert (cat.code, cat.size_used_mm) == (code, used)


@pytest.mark.parametrize("mean, code", [(3.9, "2"), (4.0, "3"), (5.9, "3"), (6.0, "4A"), (7.9, "4A"), (8.0, "4B")])
def test_lung_rads_new_solid(lr, mean, code):
    assert lr.categorize("solid", mean, new=True).code == code


def test_lung_rads_growing_solid(lr):
    assert lr.categorize("solid", 5.0, growing=True).code == "4A"
    assert lr.categorize("solid", 8.0, growing=True).code == "4B"
    assert lr.is_growth(7.6, 6.0) and not lr.is_growth(7.5, 6.0)  # growth is > 1.5 mm


@pytest.mark.parametrize("total, solid, new, code", [
    (5.9, 2.0, False, "2"),    # < 6 mm total at baseline
    (6.0, 5.9, False, "3"),    # >= 6 mm total, solid component < 6 mm
    (10.0, 6.0, False, "4A"),  # solid component 6 to < 8 mm
    (10.0, 7.9, False, "4A"),
    (10.0, 8.0, False, "4B"),  # solid component >= 8 mm
    (5.0, 2.0, True, "3"),     # new, < 6 mm total
    (9.0, 3.9, True, "4A"),    # new solid component < 4 mm
    (9.0, 4.0, True, "4B"),    # new solid component >= 4 mm
])
def test_lung_rads_part_solid_uses_the_solid_component(lr, total, solid, new, code):
    assert lr.categorize("part-solid", total, solid_component_mm=solid, new=new).code == code


def test_lung_rads_part_solid_without_solid_component_says_so(lr):
    cat = lr.categorize("part-solid", 12.0)
    assert cat.code == "3" and any("solid component not measured" in n for n in cat.notes)


def test_lung_rads_ground_glass_30_mm(lr):
    assert lr.categorize("ground-glass", 29.9).code == "2"
    assert lr.categorize("ground-glass", 30.0).code == "3"  # >= 30 mm at baseline
    assert lr.categorize("ground-glass", 31.0, new=True).code == "3"
    assert lr.categorize("ground-glass", 31.0, growing=True).code == "2"  # ">= 30 mm ... slowly growing"


def test_lung_rads_calcified_juxtapleural_and_4x(lr):
    assert lr.categorize("calcified", 12.0).code == "1"
    assert lr.categorize("solid", 9.9, juxtapleural=True).code == "2"
    assert lr.categorize("solid", 10.0, juxtapleural=True).code == "4A"  # the ACR table says < 10 mm
    assert lr.categorize("solid", 9.0, suspicious_features=True).code == "4X"
    assert lr.categorize("solid", 4.0, suspicious_features=True).code == "2"  # 4X upgrades only 3/4
    assert lr.no_nodule_category().code == "1"


def test_ranks_order_management(lr):
    ranks = [lr.categorize("solid", s).rank for s in (4, 7, 10, 20)]
    assert ranks == sorted(ranks) and len(set(ranks)) == 4
    assert lr.categorize("calcified", 5).rank == lr.categorize("solid", 4).rank  # 1 and 2: both 12-month LDCT


@pytest.mark.parametrize("name", ["fleischner_2017", "lung_rads_2022"])
def test_every_combination_has_a_row(name):
    g = load_guideline(name)
    sizes = [0.5, 3.9, 4.0, 5.4, 5.5, 5.9, 5.95, 6.0, 7.9, 8.0, 8.5, 9.9, 10.0, 14.9, 15.0, 29.9, 30.0, 80.0]
    for comp, size, count, risk, new, growing, solid in itertools.product(
            COMPOSITIONS, sizes, (1, 3), ("low", "high"), (False, True), (False, True), (None, 0.0, 3.0, 7.0)):
        cat = g.categorize(comp, size, solid_component_mm=solid, count=count, risk=risk, new=new, growing=growing)
        assert cat.rank >= 0 and cat.recommendation


def test_monotone_in_size():
    """A bigger nodule never gets less follow-up (the bisection in discordance relies on it)."""
    for name in ("fleischner_2017", "lung_rads_2022"):
        g = load_guideline(name)
        for comp, count, new in itertools.product(("solid", "part-solid", "ground-glass"), (1, 2), (False, True)):
            ranks = [g.categorize(comp, s / 10, count=count, new=new).rank for s in range(1, 400)]
            assert ranks == sorted(ranks), (name, comp, count, new)


@pytest.mark.parametrize("bad", [0.0, -3.0, float("nan"), float("inf")])
def test_bad_size_is_a_clear_error(fl, bad):
    with pytest.raises(GuidelineError, match="mean diameter"):
        fl.categorize("solid", bad)


def test_unknown_composition_lists_allowed(fl):
    with pytest.raises(GuidelineError, match="ground-glass"):
        fl.categorize("cavitary", 7)
    assert fl.categorize("GGO", 7).code == "fleischner:ground-glass:>=6"
    assert fl.categorize("part solid", 7).code == "fleischner:part-solid:>=6"


def test_select_guideline():
    assert select_guideline(ReportContext(screening=True)).name == "lung_rads_2022"
    assert select_guideline(ReportContext(stated_category="Lung-RADS 3")).name == "lung_rads_2022"
    assert select_guideline(ReportContext(stated_category="4B")).name == "lung_rads_2022"
    assert select_guideline(ReportContext(stated_category="fleischner:solid:6-8")).name == "fleischner_2017"
    assert select_guideline(ReportContext()).name == "fleischner_2017"
    for kwargs in ({"patient_age": 30}, {"known_cancer": True}, {"immunocompromised": True}):
        with pytest.raises(GuidelineError, match="does not apply|applies to"):
            select_guideline(ReportContext(), **kwargs)
    assert select_guideline(ReportContext(screening=True), known_cancer=True).name == "lung_rads_2022"


def test_invalid_table_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nrules: []\n")
    with pytest.raises(ConfigError, match="invalid"):
        load_guideline(bad)
    with pytest.raises(ConfigError, match="unknown guideline"):
        load_guideline("nccn")
    broken = (load_guideline("lung_rads_2022").model_dump())
    broken["rules"][0]["recommendation"] = "nope"
    import yaml
    ref = tmp_path / "ref.yaml"
    ref.write_text(yaml.safe_dump(broken))
    with pytest.raises(ConfigError, match="not defined"):
        load_guideline(ref)
