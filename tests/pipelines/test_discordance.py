"""Discordance engine: each flag type, tolerance behaviour, one-to-one matching, priority order, explanations."""

from __future__ import annotations

import pytest
import yaml

from pipelines.discordance import compare, load_discordance_config
from pipelines.errors import ConfigError, DiscordanceError
from pipelines.matching import match_findings, normalize_lobe, report_mean_diameter
from pipelines.types import AIFinding, ImageRef, Location, ReportContext, ReportFinding

INCIDENTAL = ReportContext(screening=False)
SCREENING = ReportContext(screening=True)


def ai(fid="ai-1", d=7.4, *, u=0.6, lobe="RUL", side="right", comp="solid", inst=50, conf=0.9, solid=None):
    return AIFinding(id=fid, confidence=conf, center_mm=[10.0, 20.0, 30.0], center_voxel=[1, 2, 3],
                     instance_number=inst, long_axis_mm=d * 1.1, short_axis_mm=d * 0.9, mean_diameter_mm=d,
                     max_3d_diameter_mm=d * 1.2, volume_mm3=0.52 * d ** 3, uncertainty_mm=u, composition=comp,
                     solid_component_mm=solid, location=Location(side=side, lobe=lobe))


def rep(fid="r-1", sizes=(5.0,), *, lobe="RUL", side="right", neg=False, hedged=False, comp=None, count=1,
        image=None, prior=None, text="a nodule", kind="nodule"):
    return ReportFinding(id=fid, kind=kind, text=text, span=[0, len(text)], size_mm=list(sizes), count=count,
                         negated=neg, hedged=hedged, location=Location(side=side, lobe=lobe), composition=comp,
                         prior_size_mm=list(prior) if prior else None, image_ref=ImageRef(image=image))


def types(cmp):
    return [(d.type, d.severity) for d in cmp.discordances]


# -- category_change vs borderline (tolerance) ------------------------------------------------------------------
def test_undersized_report_is_a_major_category_change_with_a_plain_sentence():
    cmp = compare([ai(d=7.4, u=0.6)], [rep(sizes=(5,))], INCIDENTAL)
    assert types(cmp) == [("category_change", "major")]
    d = cmp.discordances[0]
    assert (d.report_category, d.ai_category, d.ai, d.report) == ("fleischner:solid:<6", "fleischner:solid:6-8",
                                                                    "ai-1", "r-1")
    assert d.explanation == ("Report: 5 mm RUL nodule, Fleischner: no routine follow-up. "
                             "AI: 7.4 mm (±0.6), Fleischner: CT at 6–12 months.")
    assert cmp.verdict == "discordant" and cmp.priority >= 60


def test_small_disagreement_across_a_threshold_is_borderline_not_major():
    # Lung-RADS: 5.8 mm is category 2, 6.2 mm category 3, but 0.4 mm is well inside reader variability
    cmp = compare([ai(d=6.2, u=0.6)], [rep(sizes=(5.8,))], SCREENING)
    assert types(cmp) == [("borderline", "minor")]
    assert "Lung-RADS 2" in cmp.discordances[0].explanation and "Lung-RADS 3" in cmp.discordances[0].explanation
    assert "uncertainty" in cmp.discordances[0].explanation
    assert cmp.verdict == "discordant" and 30 <= cmp.priority < 60


def test_same_numbers_round_the_same_under_fleischner():
    # 5.8 and 6.2 both round to 6 mm: Fleischner sees no difference at all
    cmp = compare([ai(d=6.2)], [rep(sizes=(5.8,))], INCIDENTAL)
    assert cmp.discordances == [] and cmp.verdict == "concordant"


def test_difference_larger_than_uncertainty_but_ai_near_threshold_is_borderline():
    # Lung-RADS, report 3 mm (category 2), AI 6.3 +/- 0.6 (category 3): the gap (3.3 mm) beats the combined
    # sqrt(0.6² + 1.7²) = 1.8 mm, but the AI's own 5.7..6.9 mm straddles the 6 mm threshold.
    cmp = compare([ai(d=6.3, u=0.6)], [rep(sizes=(3,))], SCREENING)
    assert types(cmp) == [("borderline", "minor")]
    assert "threshold" in cmp.discordances[0].explanation


def test_tolerance_comes_from_config(tmp_path):
    cfg = load_discordance_config()
    tight = cfg.model_copy(update={"tolerance": cfg.tolerance.model_copy(update={"reader_tolerance_mm": 0.1})})
    # 5.8 vs 7.0 under Lung-RADS: borderline with reader tolerance 1.7 mm, major with 0.1 mm
    assert types(compare([ai(d=7.0, u=0.3)], [rep(sizes=(5.8,))], SCREENING)) == [("borderline", "minor")]
    assert types(compare([ai(d=7.0, u=0.3)], [rep(sizes=(5.8,))], SCREENING, config=tight)) == [
        ("category_change", "major")]


def test_oversized_report_is_flagged_too():
    cmp = compare([ai(d=5.0, u=0.5)], [rep(sizes=(11, 9))], INCIDENTAL)
    assert types(cmp) == [("category_change", "major")]
    assert "less follow-up" in cmp.discordances[0].explanation


def test_part_solid_solid_component_drives_lung_rads():
    # both 12 mm part-solid; the AI's solid component 9 mm (4B) vs the report's category from total size
    cmp = compare([ai(d=12, comp="part-solid", solid=9.0, u=0.5)],
                  [rep(sizes=(12,), comp="part-solid")], SCREENING)
    # the report gives no solid component: the AI's, scaled by the total sizes, stands in; sizes agree: no flag
    assert cmp.discordances == []
    cmp2 = compare([ai(d=12, comp="part-solid", solid=9.0, u=0.5)],
                   [rep(sizes=(12,), comp="part-solid").model_copy(update={"solid_component_mm": 3.0})], SCREENING)
    assert types(cmp2) == [("category_change", "major")]
    assert cmp2.discordances[0].report_category == "3" and cmp2.discordances[0].ai_category == "4B"


def test_part_solid_oversized_report_without_solid_component():
    # report 16 mm part-solid (no solid size); AI 7.3 mm with a 4.1 mm core: the report's implied core is
    # 4.1 x 16 / 7.3 = 9 mm (4B) against the AI's 3: the report asks for far more than the images support
    cmp = compare([ai(d=7.3, comp="part-solid", solid=4.1, u=0.5, lobe="LLL", side="left")],
                  [rep(sizes=(16,), comp="part-solid", lobe="LLL", side="left")], SCREENING)
    assert types(cmp) == [("category_change", "major")]
    assert (cmp.discordances[0].report_category, cmp.discordances[0].ai_category) == ("4B", "3")


def test_growth_against_the_reports_prior():
    # report: 6 mm, prior 5.5 (stable, Lung-RADS 3); AI: 8.2 mm, > 1.5 mm above the prior -> growing 4B
    cmp = compare([ai(d=8.2, u=0.4)], [rep(sizes=(6,), prior=(5.5,))], SCREENING)
    assert types(cmp) == [("category_change", "major")]
    assert cmp.discordances[0].ai_category == "4B"


# -- unmatched AI nodules ------------------------------------------------------------------------------------------
def test_negative_report_with_a_large_ai_nodule_is_major():
    cmp = compare([ai(d=22.0, lobe="LUL", side="left", inst=87)],
                  [rep(sizes=(), neg=True, lobe=None, side=None, text="No pulmonary nodules.")], INCIDENTAL)
    assert types(cmp) == [("report_negative_ai_positive", "major")]
    assert cmp.discordances[0].explanation == (
        "Report: no pulmonary nodules. AI: 22.0 mm (±0.6) solid nodule in the LUL (image 87), "
        "Fleischner: consider CT at 3 months, PET/CT or tissue sampling.")
    assert cmp.priority > 80


def test_no_other_nodules_is_not_read_as_a_negative_report():
    # "No other pulmonary nodules." implies nodules described elsewhere; with none parsed, the AI's nodule is
    # a finding the report did not describe, not a contradiction of "no nodules"
    other = rep(sizes=(), neg=True, lobe=None, side=None, text="No other pulmonary nodules.")
    other = other.model_copy(update={"negation_scope": "other"})
    cmp = compare([ai(d=22.0, lobe="LUL", side="left", inst=87)], [other], INCIDENTAL)
    assert "report_negative_ai_positive" not in [t for t, _ in types(cmp)]
    assert types(cmp)[0] == ("missed_finding", "major")


def test_negative_report_with_a_tiny_ai_nodule_is_not_major():
    cmp = compare([ai(d=3.5)], [rep(sizes=(), neg=True, lobe=None, side=None)], INCIDENTAL)
    assert types(cmp) == [("missed_finding", "minor")]
    assert "does not change management" in cmp.discordances[0].explanation


def test_negative_report_near_threshold_is_borderline():
    cmp = compare([ai(d=6.2, u=0.6)], [rep(sizes=(), neg=True, lobe=None, side=None)], SCREENING)
    assert types(cmp) == [("borderline", "minor")]


def test_missed_finding_major_only_when_it_changes_management():
    reported = rep("r-1", sizes=(4,), lobe="RUL")
    big = compare([ai("ai-1", d=4.2), ai("ai-2", d=9.5, lobe="RLL", inst=120)], [reported], INCIDENTAL)
    assert ("missed_finding", "major") in types(big)
    miss = next(d for d in big.discordances if d.type == "missed_finding")
    assert miss.ai == "ai-2" and "RLL" in miss.explanation and "image 120" in miss.explanation
    small = compare([ai("ai-1", d=4.2), ai("ai-2", d=3.0, lobe="RLL", inst=120)], [reported], INCIDENTAL)
    assert types(small) == [("missed_finding", "minor")]


def test_missed_finding_against_the_reports_own_management():
    # report already gives a 12 mm nodule (4A); a missed 7 mm one (3) does not raise management
    cmp = compare([ai("ai-1", d=12), ai("ai-2", d=7, lobe="LLL", side="left")],
                  [rep(sizes=(12,))], SCREENING)
    assert types(cmp) == [("missed_finding", "minor")]


def test_calcified_unmatched_is_ignored_by_default():
    cmp = compare([ai(d=9, comp="calcified")], [], INCIDENTAL)
    assert cmp.discordances == [] and cmp.verdict == "concordant"


def test_multiple_subsolid_missed_changes_fleischner_management():
    # a single reported 4 mm ground-glass nodule needs nothing; with a second one, Fleischner asks CT at 3-6 months
    cmp = compare([ai("ai-1", d=4, comp="ground-glass"), ai("ai-2", d=4.5, comp="ground-glass", lobe="LLL",
                                                            side="left")],
                  [rep(sizes=(4,), comp="ground-glass")], INCIDENTAL)
    assert ("missed_finding", "major") in types(cmp)


# -- report side -------------------------------------------------------------------------------------------------
def test_unconfirmed_report_finding_is_minor():
    cmp = compare([], [rep(sizes=(6,), image=45)], INCIDENTAL)
    assert types(cmp) == [("unconfirmed_report_finding", "minor")]
    assert cmp.discordances[0].explanation == ("Report: 6 mm RUL nodule (image 45), Fleischner: CT at 6–12 months. "
                                               "AI: no matching nodule found.")


def test_hedged_report_is_info_and_raises_priority():
    plain = compare([ai(d=4)], [rep(sizes=(4,))], INCIDENTAL)
    hedged = compare([ai(d=4)], [rep(sizes=(4,), hedged=True, text="possible 4 mm nodule")], INCIDENTAL)
    assert plain.verdict == "concordant" and types(hedged) == [("hedged_report", "info")]
    assert hedged.verdict == "indeterminate" and hedged.priority > plain.priority
    assert "possible 4 mm nodule" in hedged.discordances[0].explanation
    major = compare([ai(d=9)], [rep(sizes=(4,))], INCIDENTAL)
    major_hedged = compare([ai(d=9)], [rep(sizes=(4,), hedged=True)], INCIDENTAL)
    assert major_hedged.priority > major.priority and major_hedged.discordances[0].severity == "major"


def test_one_hedged_sentence_is_one_flag():
    # the parser may yield the same hedged sentence twice (e.g. two nouns in it): one info flag, not two
    text = "Indeterminate 12 mm density in the right lower lobe; a nodule cannot be excluded."
    cmp = compare([ai(d=12, lobe="RLL")], [rep("x", sizes=(12,), lobe="RLL", hedged=True, text=text),
                                            rep("y", sizes=(12,), lobe="RLL", hedged=True, text=text)], INCIDENTAL)
    assert [d.type for d in cmp.discordances].count("hedged_report") == 1


def test_part_solid_core_is_not_invented_when_totals_agree():
    # report 13 mm part-solid without a core size; AI 13.2 mm with a 5.96 mm core (rounds to 6.0: 4A).
    # Scaling the core by 13/13.2 would give 5.87 (3) and a spurious flag; with agreeing totals it is copied.
    cmp = compare([ai(d=13.2, comp="part-solid", solid=5.96, u=0.6)], [rep(sizes=(13,), comp="part-solid")],
                  SCREENING)
    assert cmp.discordances == [] and cmp.verdict == "concordant"


def test_report_nodule_without_size_matched_to_a_follow_up_nodule():
    cmp = compare([ai(d=9)], [rep(sizes=())], INCIDENTAL)
    assert types(cmp) == [("borderline", "minor")]
    assert "cannot be checked" in cmp.discordances[0].explanation


def test_no_usable_ai_result_is_indeterminate():
    cmp = compare([], [rep(sizes=(6,))], INCIDENTAL, ai_available=False)
    assert cmp.verdict == "indeterminate" and cmp.discordances == []
    assert any("no usable AI result" in n for n in cmp.notes)


def test_no_applicable_guideline_is_indeterminate():
    cmp = compare([ai(d=9)], [rep(sizes=(4,))], INCIDENTAL, known_cancer=True)
    assert cmp.verdict == "indeterminate" and cmp.guideline is None
    assert any("known primary cancer" in n for n in cmp.notes)


def test_concordant_study():
    cmp = compare([ai(d=7.2)], [rep(sizes=(8, 6))], INCIDENTAL)
    assert cmp.verdict == "concordant" and cmp.discordances == [] and cmp.priority < 10
    assert cmp.matches[0].ai == "ai-1" and cmp.matches[0].report == "r-1"
    assert cmp.report_category.code == cmp.ai_category.code == "fleischner:solid:6-8"


# -- matching -------------------------------------------------------------------------------------------------------
def test_matching_is_one_to_one_and_respects_side_and_lobe():
    cfg = load_discordance_config().matching
    ais = [ai("a", d=8, lobe="RLL"), ai("b", d=8, lobe="LUL", side="left"), ai("c", d=8, lobe="RUL")]
    reports = [rep("x", sizes=(8,), lobe="LUL", side="left"), rep("y", sizes=(8,), lobe="RUL")]
    m = match_findings(ais, reports, cfg)
    assert {(p.ai, p.report) for p in m.pairs} == {("b", "x"), ("c", "y")}
    assert m.unmatched_ai == ["a"] and m.unmatched_report == []


def test_side_mismatch_never_matches():
    cmp = compare([ai(d=7, lobe="LLL", side="left")], [rep(sizes=(7,), lobe="RLL")], INCIDENTAL)
    assert sorted(t for t, _ in types(cmp)) == ["missed_finding", "unconfirmed_report_finding"]


def test_image_reference_picks_the_right_nodule():
    cfg = load_discordance_config().matching
    ais = [ai("a", d=6, inst=40, lobe=None), ai("b", d=6, inst=140, lobe=None)]
    m = match_findings(ais, [rep("x", sizes=(6,), image=138, lobe=None)], cfg, slice_spacing_mm=1.0)
    assert [(p.ai, p.report) for p in m.pairs] == [("b", "x")]
    assert m.pairs[0].distance_mm == pytest.approx(2.0)  # sizes equal, 2 images x 1 mm apart


def test_report_count_takes_several_ai_findings():
    cmp = compare([ai("a", d=4, lobe="RUL"), ai("b", d=3.5, lobe="RLL"), ai("c", d=4.5, lobe="RML")],
                  [rep("x", sizes=(4,), lobe=None, count=3, text="three nodules in the right lung, up to 4 mm")],
                  INCIDENTAL)
    assert {m.ai for m in cmp.matches if m.report == "x"} == {"a", "b", "c"}
    assert cmp.verdict == "concordant"


def test_grossly_undersized_report_still_matches_by_its_image():
    # report: 3 mm RUL ground-glass nodule on image 45; AI: a 24 mm one on image 45 and a 10 mm one on image 34.
    # Sizes 8x apart would be gated, but the image reference says it is the same nodule.
    cfg = load_discordance_config().matching
    ais = [ai("big", d=24.3, comp="ground-glass", inst=45), ai("small", d=10.0, inst=34)]
    reports = [rep("x", sizes=(3,), comp="ground-glass", image=45), rep("y", sizes=(12, 8))]
    m = match_findings(ais, reports, cfg, slice_spacing_mm=2.5)
    assert {(p.ai, p.report) for p in m.pairs} == {("big", "x"), ("small", "y")}


def test_restating_finding_without_size_or_place_is_not_matched():
    # "... and 1 additional nodule as described" in the impression: nothing to compare, takes no AI finding
    cmp = compare([ai("a", d=21, lobe="RUL"), ai("b", d=22, comp="ground-glass", lobe="LUL", side="left")],
                  [rep("x", sizes=(22,), comp="ground-glass", lobe="LUL", side="left"),
                   rep("y", sizes=(), lobe=None, side=None, text="1 additional nodule as described")], SCREENING)
    assert all(m.report != "y" for m in cmp.matches)
    assert types(cmp) == [("missed_finding", "major")]  # the unreported 21 mm solid nodule (4B vs the GGO's 2)


def test_impression_restatement_without_size_neither_steals_a_match_nor_is_unconfirmed():
    # findings: "9 mm part-solid RML nodule"; impression: "part-solid nodule in the right middle lobe" (no size)
    cmp = compare([ai("a", d=9.3, comp="part-solid", solid=3.9, lobe="RML")],
                  [rep("x", sizes=(9,), comp="part-solid", lobe="RML"),
                   rep("y", sizes=(), comp=None, lobe="RML", text="part-solid nodule in the right middle lobe")],
                  INCIDENTAL)
    assert [(m.ai, m.report) for m in cmp.matches] == [("a", "x")]
    assert cmp.discordances == [] and any("y read as a restatement" in n for n in cmp.notes)


def test_a_sized_report_finding_is_the_better_partner():
    cfg = load_discordance_config().matching
    m = match_findings([ai("a", d=9.3, lobe="RML")], [rep("nosize", sizes=(), lobe="RML"),
                                                       rep("sized", sizes=(9,), lobe="RML")], cfg)
    assert [(p.ai, p.report) for p in m.pairs] == [("a", "sized")]


def test_matching_keeps_unmatched_rows_and_distance():
    cmp = compare([ai("a", d=7.4)], [rep("x", sizes=(5,))], INCIDENTAL)
    assert cmp.matches[0].distance_mm == pytest.approx(2.4)


def test_lobe_and_size_helpers():
    assert normalize_lobe("right upper lobe") == "RUL" and normalize_lobe("lingula") == "LUL"
    assert normalize_lobe("lower", "left") == "LLL" and normalize_lobe("hilum") is None
    assert report_mean_diameter(rep(sizes=(12, 8, 20))) == 10.0


# -- priority --------------------------------------------------------------------------------------------------------
def test_priority_orders_major_before_minor_before_info_before_concordant():
    major = compare([ai(d=9, conf=0.55)], [rep(sizes=(4,))], INCIDENTAL).priority
    minor = compare([ai(d=6.2, conf=1.0)], [rep(sizes=(5.8,))], SCREENING, waited_s=1e6).priority
    info = compare([ai(d=4)], [rep(sizes=(4,), hedged=True)], INCIDENTAL, waited_s=1e6).priority
    concordant = compare([ai(d=4)], [rep(sizes=(4,))], INCIDENTAL, waited_s=1e6).priority
    assert major > minor > info > concordant >= 0
    assert max(major, minor, info, concordant) <= 100


def test_an_ai_finding_below_the_operating_confidence_raises_no_flag():
    # configs/discordance.yaml min_ai_confidence (0.5): a low-scoring candidate is listed but flags nothing
    low = compare([ai(d=22.0, conf=0.2)], [rep(sizes=(), neg=True, lobe=None, side=None)], INCIDENTAL)
    assert not [d for d in low.discordances if d.severity == "major"]
    high = compare([ai(d=22.0, conf=0.8)], [rep(sizes=(), neg=True, lobe=None, side=None)], INCIDENTAL)
    assert ("report_negative_ai_positive", "major") in types(high)


# -- report-guided: a low-confidence AI finding where the report points ------------------------------------------
def test_oversized_report_takes_a_low_confidence_finding_on_its_image():
    # report: 16 mm LLL part-solid nodule on image 165; the AI's only finding there scored 0.18 (below 0.5).
    # Without the report it raises nothing; with the report pointing at it, the size gap is a major change.
    low = ai("ai-3", d=7.9, lobe="LLL", side="left", comp="part-solid", solid=5.0, inst=165, conf=0.18)
    r = rep("r3", sizes=(16,), lobe="LLL", side="left", comp="part-solid", image=165)
    cmp = compare([low], [r], SCREENING, slice_spacing_mm=1.25)
    assert ("category_change", "major") in types(cmp)
    m = next(m for m in cmp.matches if m.report == "r3")
    assert m.ai == "ai-3" and m.report_guided
    flag = next(d for d in cmp.discordances if d.type == "category_change")
    assert "only where the report points" in flag.explanation and "0.18" in flag.explanation
    # the same finding and report without the image reference: no pairing, the report finding stays unconfirmed
    r_no_image = rep("r3", sizes=(16,), lobe="LLL", side="left", comp="part-solid")
    plain = compare([low], [r_no_image], SCREENING, slice_spacing_mm=1.25)
    assert types(plain) == [("unconfirmed_report_finding", "minor")]
    assert not any(m.report_guided for m in plain.matches)


@pytest.mark.parametrize("where", ["other side", "far image", "contradicting composition"])
def test_report_guided_pairing_needs_the_reports_place(where):
    kw = {"other side": dict(lobe="RLL", side="right", inst=165),
          "far image": dict(lobe="LLL", side="left", inst=171),  # 6 images x 1.25 mm = 7.5 mm > 5 mm
          "contradicting composition": dict(lobe="LLL", side="left", inst=165, comp="ground-glass")}[where]
    low = ai("ai-3", d=7.9, conf=0.18, **kw)
    cmp = compare([low], [rep("r3", sizes=(16,), lobe="LLL", side="left", image=165, comp="solid")], SCREENING,
                  slice_spacing_mm=1.25)
    assert not any(m.report_guided for m in cmp.matches)
    assert not [d for d in cmp.discordances if d.severity == "major"]


def test_report_guided_lobe_rule_follows_the_settings():
    # the lung mask's lobes are approximate: by default a neighbouring lobe on the reported side and image pairs
    # (costing lobe_mismatch_cost_mm); with same_lobe it does not
    low = ai("ai-3", d=7.9, conf=0.18, lobe="LUL", side="left", inst=165)
    r = rep("r3", sizes=(16,), lobe="LLL", side="left", image=165)
    cfg = load_discordance_config()
    assert any(m.report_guided for m in compare([low], [r], SCREENING, slice_spacing_mm=1.25).matches)
    strict = cfg.model_copy(update={"report_guided": cfg.report_guided.model_copy(update={"same_lobe": True})})
    assert not any(m.report_guided
                   for m in compare([low], [r], SCREENING, slice_spacing_mm=1.25, config=strict).matches)


def test_a_report_guided_size_gap_within_the_widened_uncertainty_is_borderline():
    # report 6 mm, a sub-threshold candidate of 3.5 mm at its place: with a confident finding of that size this would
    # be a major change; the candidate's doubled uncertainty makes it borderline
    r = rep("r1", sizes=(6,), image=50)
    confident = compare([ai(d=3.5, u=1.2, conf=0.9)], [r], INCIDENTAL, slice_spacing_mm=1.0)
    assert ("category_change", "major") in types(confident)
    guided = compare([ai(d=3.5, u=1.2, conf=0.1)], [r], INCIDENTAL, slice_spacing_mm=1.0)
    assert types(guided) == [("borderline", "minor")] and guided.matches[0].report_guided


def test_a_confident_match_is_not_replaced_by_a_report_guided_one():
    good = ai("ai-1", d=15.5, lobe="LLL", side="left", inst=160, conf=0.9)
    low = ai("ai-2", d=6.0, lobe="LLL", side="left", inst=165, conf=0.1)
    cmp = compare([good, low], [rep("r3", sizes=(16,), lobe="LLL", side="left", image=165)], SCREENING,
                  slice_spacing_mm=1.25)
    assert [(m.ai, m.report_guided) for m in cmp.matches if m.report == "r3"] == [("ai-1", False)]


def test_a_set_apart_candidate_is_taken_only_from_the_reserve_when_the_report_points_at_it():
    # the model's false-positive reduction set the candidate apart (score 0.002): it is not an AI finding, but the
    # comparison may take it from the reserve for a report finding on its image
    reserve = [ai("ai-g1", d=3.5, lobe="LUL", side="left", inst=63, conf=0.002)]
    r = rep("r1", sizes=(12, 9), lobe="LUL", side="left", image=63)
    cmp = compare([], [r], INCIDENTAL, slice_spacing_mm=1.25, reserve=reserve)
    assert ("category_change", "major") in types(cmp)
    assert [(m.ai, m.report_guided) for m in cmp.matches] == [("ai-g1", True)]
    phantom = compare([], [rep("r1", sizes=(12, 9), lobe="LUL", side="left", image=90)], INCIDENTAL,
                      slice_spacing_mm=1.25, reserve=reserve)
    assert types(phantom) == [("unconfirmed_report_finding", "minor")]


def test_a_report_guided_pair_never_raises_management_to_major():
    # report: 3 mm RLL nodule on image 68; at that place only a 12.7 mm candidate the AI scores 0.39 (below 0.5).
    # The AI does not raise the category on a candidate it does not believe: minor, with the reason given
    low = ai("ai-2", d=12.7, lobe="RLL", side="right", inst=68, conf=0.39)
    r = rep("r1", sizes=(3, 3), lobe="RLL", side="right", image=68)
    cmp = compare([low], [r], SCREENING, slice_spacing_mm=1.25)
    assert types(cmp) == [("borderline", "minor")] and cmp.matches[0].report_guided
    assert "below its own threshold" in cmp.discordances[0].explanation
    cfg = load_discordance_config()
    allowed = cfg.model_copy(update={"report_guided": cfg.report_guided.model_copy(update={"no_major_upgrade": False})})
    assert types(compare([low], [r], SCREENING, slice_spacing_mm=1.25, config=allowed)) == [
        ("category_change", "major")]
    # a confident finding of that size is major as ever
    assert types(compare([ai("ai-2", d=12.7, lobe="RLL", side="right", inst=68, conf=0.9)], [r], SCREENING,
                         slice_spacing_mm=1.25)) == [("category_change", "major")]


def test_report_guided_matching_can_be_turned_off():
    cfg = load_discordance_config()
    off = cfg.model_copy(update={"report_guided": cfg.report_guided.model_copy(update={"enabled": False})})
    low = ai("ai-3", d=7.9, lobe="LLL", side="left", inst=165, conf=0.18)
    cmp = compare([low], [rep("r3", sizes=(16,), lobe="LLL", side="left", image=165)], SCREENING,
                  slice_spacing_mm=1.25, config=off)
    assert types(cmp) == [("unconfirmed_report_finding", "minor")]


def test_priority_grows_with_margin_confidence_and_waiting():
    def p(d=9.0, conf=0.9, waited=0.0):
        return compare([ai(d=d, conf=conf, u=0.5)], [rep(sizes=(4,))], INCIDENTAL, waited_s=waited).priority
    assert p(d=20.0) > p(d=9.0)
    assert p(conf=0.95) > p(conf=0.5)
    assert p(waited=3600) > p(waited=0)


def test_discordances_come_most_urgent_first():
    cmp = compare([ai("a", d=4.2), ai("b", d=12, lobe="LLL", side="left")],
                  [rep("x", sizes=(4,), hedged=True), rep("y", sizes=(3,), lobe="RML")], INCIDENTAL)
    sev = [d.severity for d in cmp.discordances]
    assert sev == sorted(sev, key={"major": 0, "minor": 1, "info": 2}.get) and sev[0] == "major"


# -- bad input and config -----------------------------------------------------------------------------------------
def test_bad_waiting_time_and_risk_are_clear_errors():
    with pytest.raises(DiscordanceError, match="waited_s"):
        compare([], [], INCIDENTAL, waited_s=-1)
    with pytest.raises(DiscordanceError, match="risk"):
        compare([], [], INCIDENTAL, risk="moderate")


def test_invalid_config_is_a_config_error(tmp_path):
    from pipelines.paths import config_path

    data = yaml.safe_load(config_path("discordance.yaml").read_text())
    data["tolerance"]["combine"] = "max"
    bad = tmp_path / "d.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="tolerance.combine"):
        load_discordance_config(bad)


def test_config_names_reader_variability_sources():
    cfg = load_discordance_config()
    assert any("LIDC" in s for s in cfg.sources) and any("Br J Radiol" in s for s in cfg.sources)
    assert cfg.tolerance.reader_tolerance_mm == pytest.approx(1.7)
