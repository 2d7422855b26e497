"""Report parsing: sizes, what they belong to, negation, hedging, location, history, context, input robustness."""

from __future__ import annotations

import json
import re

import pytest

from pipelines.errors import ReportParseError
from pipelines.report import ParsedReport, parse_report, parse_report_file
from pipelines.types import ReportContext, ReportFinding


def one(text: str) -> ReportFinding:
    parsed = parse_report(text)
    assert len(parsed.findings) == 1, [f.model_dump() for f in parsed.findings]
    return parsed.findings[0]


def sizes(text: str) -> list[list[float]]:
    return [f.size_mm for f in parse_report(text).findings if f.size_mm]


# ------------------------------------------------------------------------------------------- contract

def test_public_types_and_spans_index_the_original_text():
    text = "FINDINGS:\r\nA 1.2\u00d70.9 cm part\u2010solid nodule in the left upper lobe (series 3, image 45).\r\n"
    parsed = parse_report(text)
    assert isinstance(parsed, ParsedReport) and isinstance(parsed.context, ReportContext)
    f = parsed.findings[0]
    assert isinstance(f, ReportFinding)
    assert text[f.span[0]:f.span[1]] == f.text
    assert text[f.mention_span[0]:f.mention_span[1]] == "nodule"
    assert f.size_mm == [12.0, 9.0] and f.mean_diameter_mm == 10.5
    assert f.composition == "part-solid" and f.location.lobe == "LUL" and f.location.side == "left"
    assert (f.image_ref.series, f.image_ref.image) == (3, 45)


@pytest.mark.parametrize("text, expected", [
    ("A 7 mm nodule in the right upper lobe.", [[7.0]]),
    ("A 0.7 cm nodule in the right upper lobe.", [[7.0]]),
    ("A 7-millimeter nodule in the right upper lobe.", [[7.0]]),
    ("Right upper lobe nodule 8 x 6 mm.", [[8.0, 6.0]]),
    ("Right upper lobe nodule 8 mm x 6 mm.", [[8.0, 6.0]]),
    ("A 1.2 x 0.9 x 0.8 cm nodule in the right upper lobe.", [[12.0, 9.0, 8.0]]),
    ("3-4 mm nodule in the right upper lobe.", [[4.0]]),
    ("Two nodules measuring 4 and 6 mm in the right upper lobe.", [[4.0], [6.0]]),
    ("Nodules of 3, 4 and 5 mm in the left lower lobe.", [[3.0], [4.0], [5.0]]),
])
def test_sizes_in_mm_with_axes_ranges_and_lists(text, expected):
    assert sorted(sizes(text)) == sorted(expected)


def test_bounds_and_qualifiers_are_kept():
    f = one("Right lower lobe nodule measuring up to 6 mm.")
    assert f.size_mm == [6.0] and f.bound == "≤"
    f = one("Small nodule in the left upper lobe, less than 6 mm.")
    assert f.size_mm == [6.0] and f.bound == "<"
    f = one("3-4 mm nodule in the lingula.")
    assert f.bound == "range" and f.size_range_mm == [3.0, 4.0]
    f = one("Subcentimeter nodule in the right upper lobe.")
    assert f.size_mm == [] and f.mean_diameter_mm is None and f.size_qualifier == "subcentimeter"


@pytest.mark.parametrize("text, current, prior, stability", [
    ("Right middle lobe nodule measures 8 mm (previously 4 mm).", [8.0], [4.0], "enlarging"),
    ("The right middle lobe nodule has increased from 5 to 7 mm.", [7.0], [5.0], "enlarging"),
    ("The right lower lobe mass has grown from 2.8 cm to 3.5 cm.", [35.0], [28.0], "enlarging"),
    ("Nodule in the left upper lobe now 10 x 8 mm compared with 7 x 6 mm on the prior study.", [10.0, 8.0], [7.0, 6.0],
     "enlarging"),
    ("The left lower lobe nodule has decreased from 9 to 6 mm.", [6.0], [9.0], "decreasing"),
    ("Right upper lobe nodule, 5 mm, previously 5 mm.", [5.0], [5.0], "stable"),
])
def test_prior_sizes_are_not_current_sizes(text, current, prior, stability):
    f = one(text)
    assert f.size_mm == current and f.prior_size_mm == prior and f.stability == stability


@pytest.mark.parametrize("text", [
    "Right paratracheal lymph node measures 15 mm in short axis.",
    "There is a 1.9 cm nodule in the right lobe of the thyroid.",
    "There is a 3.2 cm right adrenal mass.",
    "Simple hepatic cyst of 2.2 cm.",
    "Infrarenal aortic aneurysm measuring 4.1 cm.",
    "Hypodense liver lesion measuring 8 mm.",
    "Images reconstructed at 1.25 mm slice thickness.",
    "Small pericardial effusion, 6 mm.",
    "An anterior mediastinal mass measures 5.2 x 3.8 cm.",
    "In the subcutaneous soft tissues at the level of C6 there is a rounded dense lesion measuring 30 mm.",
])
def test_measurements_of_other_things_are_not_nodules(text):
    assert parse_report(text).findings == []


def test_a_sentence_mixing_a_nodule_and_distractors_keeps_only_the_nodule():
    parsed = parse_report("A 9 mm nodule in the left upper lobe and a 14 mm left hilar lymph node; "
                          "splenic cyst of 38 mm.")
    assert [f.size_mm for f in parsed.findings] == [[9.0]]
    assert parsed.findings[0].location.lobe == "LUL"


def test_solid_component_is_not_the_nodule_size():
    f = one("Part solid nodule right upper lobe 16 mm with 4 mm solid component.")
    assert f.size_mm == [16.0] and f.solid_component_mm == 4.0 and f.composition == "part-solid"


# ------------------------------------------------------------------------------------ negation, hedging

@pytest.mark.parametrize("text", [
    "No pulmonary nodules.", "No suspicious lung nodules are seen.",
    "The lungs are clear without nodules or masses.", "There is no evidence of pulmonary nodules or masses.",
    "Negative for pulmonary nodules.", "No lung nodule, mass, or infiltrate.",
])
def test_a_negative_report_is_one_negated_finding_with_count_zero(text):
    parsed = parse_report(text)
    assert len(parsed.findings) == 1
    f = parsed.findings[0]
    assert f.negated and f.count == 0 and f.negation_scope == "all"
    assert parsed.report_negative


def test_no_new_nodules_is_not_a_global_negative():
    parsed = parse_report("No new pulmonary nodules.")
    f = parsed.findings[0]
    assert f.negated and f.count == 0 and f.stability == "new" and f.negation_scope == "new"
    assert not parsed.report_negative


def test_resolved_and_no_longer_seen_are_negations_of_that_nodule():
    f = one("The previously seen left lower lobe nodule has resolved.")
    assert f.negated and f.location.lobe == "LLL"
    f = one("The 4 mm nodule in the right middle lobe is no longer seen.")
    assert f.negated and f.location.lobe == "RML"


def test_negation_stops_at_a_terminator():
    parsed = parse_report("No suspicious nodules are seen, apart from a calcified granuloma in the right lower lobe.")
    neg = [f for f in parsed.findings if f.negated]
    pos = [f for f in parsed.findings if not f.negated]
    assert len(neg) == 1 and len(pos) == 1
    assert pos[0].composition == "calcified" and pos[0].location.lobe == "RLL"
    assert not parsed.report_negative


@pytest.mark.parametrize("text, hedged", [
    ("A small nodule in the right middle lobe cannot be excluded.", True),
    ("Possible 3 mm nodule in the left apex versus scar.", True),
    ("A 6 mm nodule within the right middle lobe may represent an intrapulmonary lymph node.", True),
    ("Indeterminate 1.1 cm left lower lobe nodule.", True),
    ("Questionable 2 mm nodule in the right lung base.", True),
    ("A 6 mm solid nodule in the right upper lobe.", False),
    ("Calcified nodule in the left lower lobe, consistent with a granuloma.", False),
])
def test_hedging(text, hedged):
    assert one(text).hedged is hedged


def test_stability_words_are_not_negations():
    f = one("There is no significant change in the 5 mm right upper lobe nodule.")
    assert not f.negated and f.stability == "stable" and f.size_mm == [5.0]


# -------------------------------------------------------------------------------- count, place, history

@pytest.mark.parametrize("text, count", [
    ("Multiple pulmonary nodules bilaterally.", 2), ("Several small nodules in both lungs.", 3),
    ("Innumerable tiny nodules in both lungs.", 20), ("A few calcified granulomas.", 2),
    ("Three nodules in the left lower lobe, the largest 6 mm.", 3), ("A solitary nodule in the right upper lobe.", 1),
])
def test_counts(text, count):
    assert one(text).count == count


@pytest.mark.parametrize("text, side, lobe, segment", [
    ("Nodule in the lingula.", "left", "LUL", "lingula"),
    ("Nodule in segment 6 of the left lower lobe.", "left", "LLL", "S6"),
    ("Nodule in the superior segment of the right lower lobe.", "right", "RLL", "superior"),
    ("RML nodule.", "right", "RML", None),
    ("Nodule in the upper lobe of the left lung.", "left", "LUL", None),
    ("Nodule in the right lung base.", "right", None, None),
    ("Nodules in both lungs.", "bilateral", None, None),
])
def test_locations(text, side, lobe, segment):
    loc = one(text).location
    assert (loc.side, loc.lobe, getattr(loc, "segment", None)) == (side, lobe, segment)


def test_several_nodules_get_their_own_size_place_and_image():
    parsed = parse_report("Two small nodules are seen: 3 mm in the right upper lobe (image 34) and 5 mm in the left lower "
                          "lobe (image 78).")
    got = sorted((f.size_mm[0], f.location.lobe, f.image_ref.image) for f in parsed.findings)
    assert got == [(3.0, "RUL", 34), (5.0, "LLL", 78)]


@pytest.mark.parametrize("text, series, image", [
    ("Nodule in the RUL (Series 5, Image 456).", 5, 456), ("Nodule in the RUL (se 3 im 98).", 3, 98),
    ("Nodule in the RUL on image 4-201.", 4, 201), ("Nodule in the RUL (image 102 of series 5).", 5, 102),
    ("RUL nodule 6 mm (7-123).", 7, 123), ("Nodule in the RUL, image 55.", None, 55),
])
def test_image_references(text, series, image):
    ref = one(text).image_ref
    assert (ref.series, ref.image) == (series, image)


def test_same_nodule_in_findings_and_impression_is_counted_once():
    text = ("FINDINGS: A 5 mm solid nodule in the right upper lobe (series 2, image 61) is unchanged. "
            "No pleural effusion.\nIMPRESSION: Stable 5 mm right upper lobe nodule.")
    parsed = parse_report(text)
    assert len(parsed.findings) == 1
    f = parsed.findings[0]
    assert f.section == "findings" and f.stability == "stable" and len(f.other_spans) == 1


def test_history_and_technique_do_not_make_findings():
    text = ("INDICATION: Follow-up of a 6 mm right upper lobe nodule.\nTECHNIQUE: 1.25 mm slices.\n"
            "FINDINGS: The lungs are clear. No pulmonary nodules.")
    parsed = parse_report(text)
    assert len(parsed.findings) == 1 and parsed.findings[0].negated


def test_context_screening_category_recommendation():
    text = ("EXAM: LOW-DOSE CT LUNG CANCER SCREENING\nFINDINGS: 7 mm solid nodule in the right lower lobe, new.\n"
            "IMPRESSION: Lung-RADS category 4A. Follow-up LDCT in 3 months is recommended.")
    ctx = parse_report(text).context
    assert ctx.screening is True and ctx.stated_category == "4A" and ctx.interval_months == 3
    assert "3 months" in ctx.recommendation
    ctx = parse_report("FINDINGS: No nodules.\nIMPRESSION: Negative. Lung-RADS 2S.").context
    assert ctx.stated_category == "2" and ctx.category_modifiers == ["S"]
    ctx = parse_report("CT chest with contrast. FINDINGS: 8 mm nodule in the RUL. IMPRESSION: CT in 6-12 months.").context
    assert ctx.screening is False and ctx.interval_months == 6 and ctx.interval_range_months == [6, 12]


# ---------------------------------------------- decimal commas, paired priors, restatements, context lines

@pytest.mark.parametrize("text, expected", [
    ("Nodule in the right upper lobe measuring 1,2 cm.", [[12.0]]),
    ("Ground-glass nodule in the left lower lobe of 0,8 x 0,6 cm.", [[8.0, 6.0]]),
    ("Nodule in the lingula of 0,5-0,7 cm.", [[7.0]]),
    ("Two nodules in the left upper lobe of 4,5 and 6,5 mm.", [[4.5], [6.5]]),
    ("Nodules of 5,6 and 7 mm in the right middle lobe.", [[5.0], [6.0], [7.0]]),  # a list, not 5.6 mm
])
def test_decimal_commas_are_decimals_unless_they_list_whole_numbers(text, expected):
    assert sorted(sizes(text)) == sorted(expected)


@pytest.mark.parametrize("text, pairs", [
    ("Two nodules in the right lower lobe now measure 6 and 8 mm, previously 4 and 5 mm.", [(6, 4), (8, 5)]),
    ("The left upper lobe nodules measure 5 mm and 7 mm, previously 4 mm and 5 mm.", [(5, 4), (7, 5)]),
    ("Nodules in the lingula of 4 and 6 mm, 4 and 5 mm on the previous examination.", [(4, 4), (6, 5)]),
    ("The metastases in the left lower lobe have grown from 5 and 7 mm to 9 and 12 mm.", [(9, 5), (12, 7)]),
])
def test_a_list_of_prior_sizes_pairs_with_the_list_of_current_sizes(text, pairs):
    got = sorted((f.size_mm[0], f.prior_size_mm[0] if f.prior_size_mm else None) for f in parse_report(text).findings)
    assert got == sorted((float(a), float(b)) for a, b in pairs)


def test_a_size_said_to_be_current_is_not_swept_into_a_prior_list():
    f = one("Previously 4 mm, and 6 mm now, the right upper lobe nodule has grown.")
    assert f.size_mm == [6.0] and f.prior_size_mm == [4.0] and f.stability == "enlarging"


def test_versus_a_prior_size_is_a_comparison_not_a_hedge():
    f = one("Left lower lobe nodule 7 mm vs. 5 mm in 2023.")
    assert f.size_mm == [7.0] and f.prior_size_mm == [5.0] and not f.hedged
    assert one("Right lower lobe nodule, granuloma versus metastasis.").hedged


@pytest.mark.parametrize("text, dose_only_elsewhere", [
    ("CT CHEST WITH CONTRAST\nTechnique: Low-dose protocol.\nFindings: 5 mm nodule in the RUL.", True),
    ("CT CHEST\nComparison: LDCT of 03/2023, lung cancer screening.\nFindings: 5 mm nodule in the RUL.", True),
    ("CT CHEST\nFindings: Compared with the low-dose CT of 2023, the 5 mm RUL nodule is stable.", True),
    ("LOW-DOSE CT LUNG CANCER SCREENING\nTechnique: Low-dose protocol.\nFindings: 5 mm nodule in the RUL.", False),
    ("CT CHEST\nHistory: Lung cancer screening, 40 pack-years.\nFindings: 5 mm nodule in the RUL.", False),
])
def test_low_dose_in_a_technique_or_comparison_line_does_not_make_a_screening_exam(text, dose_only_elsewhere):
    assert parse_report(text).context.screening is (not dose_only_elsewhere)


def test_a_count_the_sentence_then_enumerates_is_not_a_finding_of_its_own():
    parsed = parse_report("There are two new nodules: a 5 mm nodule in the lingula and a 3 mm nodule in the right "
                          "lower lobe.")
    got = sorted((f.size_mm[0], f.location.lobe, f.stability, f.count) for f in parsed.findings)
    assert got == [(3.0, "RLL", "new", 1), (5.0, "LUL", "new", 1)]
    f = one("Multiple nodules, the largest 6 mm in the right upper lobe.")  # not enumerated: one finding, count 2
    assert f.count == 2 and f.size_mm == [6.0]


def test_an_impression_listing_sizes_with_places_restates_the_findings_once():
    text = ("Findings:\nIn the left lower lobe, superior segment, there is an 8 x 6 mm solid nodule (series 3, "
            "image 120). A further nodule of 5 mm is seen in the right upper lobe (series 3, image 40).\n"
            "Conclusion:\nTwo pulmonary nodules, 8 mm in the left lower lobe and 5 mm in the right upper lobe "
            "suspicious for metastases.\n")
    got = sorted((f.size_mm, f.location.lobe, f.image_ref.image) for f in parse_report(text).findings)
    assert got == [([5.0], "RUL", 40), ([8.0, 6.0], "LLL", 120)]


def test_sizeless_impression_restatements_carry_their_hedge_to_the_findings():
    text = ("FINDINGS:\nLungs: Two solid nodules in the left lower lobe measuring 4 and 6 mm. A 6 mm ground-glass "
            "nodule in the right upper lobe.\nIMPRESSION:\n1. Two left lower lobe nodules, indeterminate.\n"
            "2. The ground-glass nodule in the right upper lobe may represent inflammation or an early "
            "adenocarcinoma.")
    parsed = parse_report(text)
    assert len(parsed.findings) == 3
    assert all(f.hedged for f in parsed.findings)
    assert all(f.section == "findings" for f in parsed.findings)


@pytest.mark.parametrize("text, n", [
    ("Rounded opacity in the left upper lobe measuring 3 cm, which may represent focal pneumonia or a mass.", 1),
    ("Nodule in the right lower lobe, likely a granuloma or a metastasis.", 1),
    ("Calcified nodule in the left lower lobe, granuloma.", 1),
    ("Nodule in the right upper lobe, mass in the left lower lobe.", 2),
])
def test_a_differential_diagnosis_names_the_finding_it_follows(text, n):
    parsed = parse_report(text)
    assert len(parsed.findings) == n
    if n == 2:
        assert [(f.kind, f.location.lobe) for f in parsed.findings] == [("nodule", "RUL"), ("mass", "LLL")]


def test_a_denied_mass_or_nodule_is_a_negative_about_nodules():
    f = one("No suspicious pulmonary mass or nodule is identified.")
    assert f.negated and f.kind == "nodule"
    assert one("No focal lung lesions.").kind == "lesion"


def test_the_larger_of_two_nodules_is_not_growth():
    assert one("Two nodules in the right upper lobe, the larger measuring 6 mm.").stability is None
    assert one("The right upper lobe nodule is larger, now 8 mm.").stability == "enlarging"


def test_not_present_before_means_new_not_absent():
    f = one("Small nodule in the lingula of 3,5 mm (series 201, image 77), not present before.")
    assert not f.negated and f.stability == "new" and f.size_mm == [3.5] and f.count == 1


def test_annual_ldct_is_a_twelve_month_recommendation():
    ctx = parse_report("FINDINGS: 3 mm nodule in the right lower lobe.\nIMPRESSION: Lung-RADS 2. Annual LDCT.").context
    assert ctx.interval_months == 12 and ctx.recommendation == "Annual LDCT."


def test_the_image_of_a_solid_component_is_its_nodules():
    f = one("Right upper lobe 9 mm part-solid nodule with a 3 mm solid component (image 48).")
    assert f.size_mm == [9.0] and f.solid_component_mm == 3.0 and f.image_ref.image == 48


# -------------------------------------------------------------------------------------- real reports

def _dragon(shared_data, name: str) -> str:
    text = (shared_data / "reports" / "dragon-samples" / name).read_text(encoding="utf-8")
    return re.search(r"```\n(.*?)```", text, re.S).group(1)


@pytest.mark.parametrize("name", ["Task023_nodule_diameter_reg.md", "Task007_nodule_diameter_presence_clf.md"])
def test_dragon_nodule_diameter_sample_gives_7mm_and_no_other_size(shared_data, name):
    parsed = parse_report(_dragon(shared_data, name))
    sized = [f for f in parsed.findings if f.size_mm]
    assert [f.size_mm for f in sized] == [[7.0]]
    f = sized[0]
    assert f.location.lobe == "LLL" and f.location.segment == "S6" and f.composition == "calcified"
    assert (f.image_ref.series, f.image_ref.image) == (5, 456)
    assert len(parsed.findings) == 1  # the impression's "nodule in the left lower lobe" is the same one


def test_dragon_nodule_presence_sample_has_multiple_nodules(shared_data):
    parsed = parse_report(_dragon(shared_data, "Task002_nodule_clf.md"))
    nod = [f for f in parsed.findings if f.kind == "nodule" and not f.negated]
    assert nod and nod[0].count >= 2 and nod[0].location.lobe == "RLL"


def test_mtsamples_chest_ct_reports_parse(shared_data):
    import csv

    path = shared_data / "reports" / "mtsamples" / "mtsamples_chestct_and_nodule_size_subset.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = {r["transcription"]: r for r in csv.DictReader(fh)}
    by_name = {r["sample_name"].strip(): t for t, r in rows.items()}
    # "CT Chest": "The lungs are clear with no infiltrates, effusions, or masses."
    parsed = parse_report(by_name["CT Chest"])
    assert parsed.report_negative
    # CT abdomen: "1.6 cm nodular density at the left posterior sulcus" beside renal, adrenal and hernia sizes
    parsed = parse_report(by_name["CT Abdomen & Pelvis - 3"])
    assert sorted(f.size_mm for f in parsed.findings if f.size_mm) == [[16.0]]
    for t in rows:  # every note parses
        parse_report(t)


# --------------------------------------------------------------------------------- files and encodings

REPORT = "FINDINGS: A 6 mm nodule in the right upper lobe (series 3, image 40). Caf\u00e9-au-lait sign absent.\n"


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "cp1252", "latin-1"])
def test_report_files_in_any_encoding(tmp_path, encoding):
    p = tmp_path / "report.txt"
    p.write_bytes(REPORT.encode(encoding))
    parsed = parse_report_file(p)
    assert [f.size_mm for f in parsed.findings] == [[6.0]]
    assert parsed.findings[0].location.lobe == "RUL"


def _basic_text_sr(path, findings: str, impression: str):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    def code(value, meaning):
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, "DCM", meaning
        return c

    def text_item(value, meaning, text):
        it = Dataset()
        it.RelationshipType, it.ValueType = "CONTAINS", "TEXT"
        it.ConceptNameCodeSequence = [code(value, meaning)]
        it.TextValue = text
        return it

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ValueType = "SR", "CONTAINER"
    ds.ConceptNameCodeSequence = [code("18748-4", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [text_item("121071", "Finding", findings), text_item("121073", "Impression", impression)]
    ds.save_as(path, enforce_file_format=True)


def test_dicom_sr_text_items_are_parsed(tmp_path):
    p = tmp_path / "report.dcm"
    _basic_text_sr(p, "A 9 x 7 mm solid nodule in the left lower lobe (series 4, image 233). Thyroid nodule of 14 mm.",
                   "Solid 9 mm left lower lobe nodule. Lung-RADS 4A.")
    parsed = parse_report_file(p)
    assert [f.size_mm for f in parsed.findings] == [[9.0, 7.0]]
    assert parsed.findings[0].location.lobe == "LLL" and parsed.context.stated_category == "4A"


def test_dicom_that_is_not_an_sr_is_refused(shared_data):
    ct = shared_data / "dicom" / "transfer-syntaxes" / "CTImage.dcm"
    if not ct.exists():
        pytest.skip("CTImage.dcm not present")
    with pytest.raises(ReportParseError, match="no SR text"):
        parse_report_file(ct)


@pytest.mark.parametrize("name", ["test-SR.dcm", "reportsi.dcm", "reportsi_with_empty_number_tags.dcm"])
def test_real_sr_files_give_findings_or_a_typed_error(shared_data, name):
    p = shared_data / "dicom" / "pydicom-testfiles" / name
    if not p.exists():
        pytest.skip(f"{name} not present")
    try:
        parsed = parse_report_file(p)
    except ReportParseError:
        return
    assert isinstance(parsed, ParsedReport)


@pytest.mark.parametrize("data, match", [
    (b"", "empty"), (b"   \n\t ", "empty"), (bytes(range(256)) * 40, "not look like text"), (b"12345 678\n", "no words"),
])
def test_bad_input_is_a_typed_error(tmp_path, data, match):
    p = tmp_path / "r.txt"
    p.write_bytes(data)
    with pytest.raises(ReportParseError, match=match):
        parse_report_file(p)


def test_missing_file_and_folder_are_typed_errors(tmp_path):
    with pytest.raises(ReportParseError):
        parse_report_file(tmp_path / "nope.txt")
    with pytest.raises(ReportParseError):
        parse_report_file(tmp_path)


def test_one_megabyte_report_parses():
    block = ("FINDINGS: A 6 mm nodule in the right upper lobe (series 3, image 40). No pleural effusion. "
             "Subcarinal lymph node 12 mm.\nIMPRESSION: Stable 6 mm nodule. Lung-RADS 2.\n")
    text = (block * (1_000_000 // len(block) + 1))[:1_000_000]
    parsed = parse_report(text)
    # concatenated reports stay apart (each impression folds into its own findings) until the safety cap
    assert len(parsed.findings) == 250 and all(f.size_mm == [6.0] for f in parsed.findings)
    assert parsed.warnings and "max_findings" in parsed.warnings[0]
    run_on = "nodule 5 mm " * 90_000  # one endless sentence
    parsed = parse_report(run_on)
    assert parsed.findings and parsed.warnings
    # thousands of mentions that fold into few findings: reading stops at max_mentions, and says so
    folding = ("two nodules in the RUL, the larger " * 29_000)[:1_000_000]
    parsed = parse_report(folding)
    assert parsed.findings and any("max_mentions" in w for w in parsed.warnings)


# ------------------------------------------------------------------------------------------------ CLI

def test_cli_parse_report_json(tmp_path):
    from serving.cli import main

    rep = tmp_path / "r.txt"
    rep.write_text("FINDINGS: 8 mm nodule in the left upper lobe.\nIMPRESSION: Lung-RADS 4A.\n")
    out = tmp_path / "o.json"
    assert main(["parse-report", str(rep), "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["report_findings"][0]["size_mm"] == [8.0]
    assert data["report_findings"][0]["location"] == {"side": "left", "lobe": "LUL"}
    assert data["report_context"]["stated_category"] == "4A"


def test_cli_bad_report_exits_2(tmp_path, capsys):
    from serving.cli import main

    rep = tmp_path / "r.bin"
    rep.write_bytes(bytes(range(256)) * 10)
    assert main(["parse-report", str(rep), "--json", "-"]) == 2
    err = capsys.readouterr().err
    assert "ReportParseError" in err and "Traceback" not in err


# ----------------------------------------------------- blind batch 2026-11-22: the error classes it showed

@pytest.mark.parametrize("text", [
    "No other pulmonary nodules.", "No further pulmonary nodules are seen.", "There are no additional nodules.",
    "Without evidence of suspicious pulmonary nodularity.",
])
def test_no_other_nodules_is_a_negated_finding_that_leaves_described_ones(text):
    f = one(text)
    assert f.negated and f.count == 0 and f.negation_scope != "new"
    parsed = parse_report("A 6 mm nodule in the right upper lobe. " + text)
    assert [(x.size_mm, x.negated) for x in parsed.findings] == [([6.0], False), ([], True)]
    assert not parsed.report_negative  # "no other" never denies the nodule just described


@pytest.mark.parametrize("text, size", [
    ("The right upper lobe mass has grown by 4 mm and now measures 3.1 cm.", [31.0]),
    ("The nodule has decreased in size by 2 mm, now 6 mm.", [6.0]),
    ("The LLL nodule increased by 3 mm to 9 mm.", [9.0]),
    ("A 7 mm nodule in the RUL, an interval increase of 2 mm.", [7.0]),
    ("The RUL nodule has grown 3 mm since 2024 and now measures 12 mm.", [12.0]),
    ("The RUL nodule now measures 9 mm, 2 mm larger than before.", [9.0]),
])
def test_a_change_in_size_is_not_a_size(text, size):
    assert sizes(text) == [size]


def test_long_and_short_axis_are_one_size_and_a_volume_is_none():
    f = one("LUL nodule: long axis 11 mm, short axis 8 mm, volume 410 mm3.")
    assert f.size_mm == [11.0, 8.0] and f.mean_diameter_mm == 9.5 and f.location.lobe == "LUL"
    assert one("RUL nodule, short axis 5 mm, long axis 7 mm.").size_mm == [7.0, 5.0]
    assert one("RLL nodule measuring 11 mm (long axis) and 8 mm (short axis).").size_mm == [11.0, 8.0]
    assert sizes("Nodule in the RLL, volume of 0.4 cm with a diameter of 9 mm.") == [[9.0]]


@pytest.mark.parametrize("text, hedged", [
    ("Tiny (2-3 mm) perifissural nodule along the right minor fissure, likely an intrapulmonary lymph node.", True),
    ("A 4 mm nodule in the RLL, most likely a lymph node.", True),
    ("A 5 mm perifissural nodule, consistent with an intrapulmonary lymph node.", False),
    ("A 4 mm nodule in the left lower lobe, likely benign.", True),  # uncertainty about what it is (2026-11-22b)
])
def test_likely_another_structure_hedges_the_nodule(text, hedged):
    f = one(text)
    assert f.hedged is hedged and f.size_mm and not f.negated


@pytest.mark.parametrize("text, size", [
    ("A six millimetre nodule in the RML.", [6.0]), ("A twelve millimeter solid nodule in the LUL.", [12.0]),
    ("Three centimetre mass in the right upper lobe.", [30.0]), ("A nodule of twenty-two millimetres in the RUL.", [22.0]),
])
def test_number_words_give_sizes(text, size):
    f = one(text)
    assert f.size_mm == size and f.count == 1


def test_image_reference_after_versus_vessel_is_the_nodules():
    f = one("Probable 4 mm nodule in the RML versus vessel (image 95).")
    assert f.hedged and f.size_mm == [4.0] and f.image_ref.image == 95 and f.location.lobe == "RML"


def test_the_largest_in_the_next_sentence_sizes_the_group():
    f = one("Multiple new bilateral pulmonary nodules are present. The largest is in the left lower lobe measuring "
            "14 x 12 mm.")
    assert f.count >= 2 and f.size_mm == [14.0, 12.0] and f.location.lobe == "LLL" and f.stability == "new"
    assert f.size_of == "largest"


def test_structured_nodule_list_after_a_comparison_line():
    parsed = parse_report("LDCT LUNG SCREENING\nComparison: LDCT 2025.\nNodules:\n"
                          "- Nodule 1: LUL, solid, 5 mm, series 2 image 58. New.\n"
                          "- Nodule 2: RLL, part-solid, 9 mm, series 2 image 190. Stable.\n"
                          "Management: 6-month LDCT.")
    got = [(f.size_mm, f.location.lobe, f.composition, f.image_ref.image, f.stability) for f in parsed.findings]
    assert got == [([5.0], "LUL", "solid", 58, "new"), ([9.0], "RLL", "part-solid", 190, "stable")]
    assert parsed.context.screening and parsed.context.interval_months == 6


def test_composition_of_a_coordinated_group_is_not_lent_to_each_nodule():
    parsed = parse_report("FINDINGS: A 6 mm ground-glass nodule in the RUL. A 4 mm perifissural nodule in the RML.\n"
                          "IMPRESSION: Stable ground-glass and perifissural nodules.")
    assert [(f.size_mm, f.composition, f.stability) for f in parsed.findings] == [
        ([6.0], "ground-glass", "stable"), ([4.0], None, "stable")]


@pytest.mark.parametrize("text, months", [
    ("Next screening CT in one year.", 12), ("Repeat CT in three months.", 3), ("Recommend LDCT in a year.", 12),
])
def test_intervals_in_words(text, months):
    assert parse_report("IMPRESSION: Lung-RADS 2. " + text).context.interval_months == months


def test_headers_alone_on_their_line_and_a_nodule_list_right_after_comparison():
    parsed = parse_report("EXAM: LDCT chest\nCOMPARISON: LDCT 2025-10-01.\n"
                          "- Nodule 1: LUL, solid, 5 mm, series 2 image 58. New.\n"
                          "IMPRESSION\nLung-RADS 3.\nRECOMMENDATION\n6-month LDCT.")
    assert [(f.size_mm, f.location.lobe, f.stability) for f in parsed.findings] == [([5.0], "LUL", "new")]
    assert parsed.context.stated_category == "3" and parsed.context.interval_months == 6
    # history and comparison lines still say nothing of this exam's findings
    assert parse_report("COMPARISON: CT 2024 showed a 6 mm nodule in the RUL.\nFINDINGS: No nodules.").report_negative


# --- error classes of the 2026-11-22b blind batch (phrasings of our own)

def test_mixed_units_keep_their_own_and_respectively_pairs_images_in_order():
    fs = parse_report("Two left lower lobe nodules measuring 4 mm and 1.1 cm, series 3 images 201 and 215 "
                      "respectively.").findings
    assert [(f.size_mm, f.image_ref.series, f.image_ref.image) for f in fs] == [([4.0], 3, 201), ([11.0], 3, 215)]
    assert sizes("Three nodules in the lingula of 3 mm, 5 mm and 1 cm.") == [[3.0], [5.0], [10.0]]
    assert sizes("A 1.2 x 0.9 cm nodule in the RUL.") == [[12.0, 9.0]]


@pytest.mark.parametrize("text, prior", [
    ("The previously noted 5 mm LUL nodule has resolved.", [5.0]),
    ("Resolution of the previously seen 9 mm ground-glass nodule.", [9.0]),
    ("The 6 mm nodule in the RML is no longer seen.", [6.0]),
])
def test_a_resolved_nodule_has_a_prior_size_and_no_current_size(text, prior):
    f = one(text)
    assert f.negated and f.count == 0 and f.size_mm == [] and f.prior_size_mm == prior
    assert one("No nodules > 6 mm.").size_mm == [6.0]  # a bound, not a nodule that was there


def test_a_resolved_nodule_restated_in_the_impression_is_one_finding():
    r = parse_report("FINDINGS: The previously noted 5 mm left upper lobe nodule has resolved.\n"
                     "IMPRESSION: Resolution of the previously seen left upper lobe nodule.")
    assert len(r.findings) == 1 and r.findings[0].prior_size_mm == [5.0] and r.findings[0].location.lobe == "LUL"


@pytest.mark.parametrize("text", [
    "Nodule in the lingula, likely post-inflammatory.", "4 mm RUL nodule, probably benign.",
    "Probable 5 mm nodule in the right lower lobe.",
])
def test_likely_and_probable_hedge_what_the_finding_is(text):
    assert one(text).hedged


def test_a_stated_mean_in_parentheses_is_no_second_finding():
    f = one("6 x 5 mm (mean 5.5 mm) solid nodule in the RUL.")
    assert f.size_mm == [6.0, 5.0] and f.stated_mean_mm == 5.5


@pytest.mark.parametrize("text", ["Nodule 5mm RLL, 12mm LN right hilum.", "Nodule 5 mm RLL; LNs up to 12 mm."])
def test_ln_is_a_lymph_node(text):
    assert sizes(text) == [[5.0]]


def test_between_two_numbers_is_one_range():
    f = one("Nodule in the left upper lobe measuring between 3 and 4 mm.")
    assert f.size_mm == [4.0] and f.size_range_mm == [3.0, 4.0]
    assert sizes("Two nodules measuring 3 and 4 mm.") == [[3.0], [4.0]]


def test_subsolid_is_its_own_composition():
    assert one("Subsolid nodule in the right upper lobe measuring 8 mm.").composition == "subsolid"
    assert one("Non-solid nodule in the right upper lobe measuring 8 mm.").composition == "ground-glass"


def test_too_numerous_to_count_is_innumerable():
    assert one("Too numerous to count pulmonary nodules.").count == one("Innumerable pulmonary nodules.").count == 20


@pytest.mark.parametrize("text", [
    "Linear opacity in the left lower lobe may represent atelectasis; a small nodule cannot be excluded.",
    "Nodular density at the left base may represent atelectasis, although a small nodule cannot be excluded.",
    "Rounded opacity in the right middle lobe, may represent atelectasis; a small nodule cannot be entirely excluded.",
])
def test_a_doubt_about_one_opacity_is_one_hedged_finding(text):
    f = one(text)
    assert f.hedged and not f.negated


def test_template_fields_belong_to_their_nodule():
    r = parse_report("Nodule 1:\nLocation: left upper lobe, lingula\nSize: 6 mm\nType: solid\nSeries/Image: 3/44\n"
                     "Change: stable\nNodule 2:\nLocation: right lower lobe\nSize: 9 x 7 mm\nType: part-solid\n"
                     "Series: 3\nImage: 120\nChange: new\n")
    got = [(f.size_mm, f.location.lobe, getattr(f.location, "segment", None), f.composition, f.image_ref.series, f.image_ref.image,
            f.stability) for f in r.findings]
    assert got == [([6.0], "LUL", "lingula", "solid", 3, 44, "stable"),
                   ([9.0, 7.0], "RLL", None, "part-solid", 3, 120, "new")]
    # spans still index the original text
    assert "lingula\nSize: 6 mm\nType: solid" in r.text[r.findings[0].span[0]:r.findings[0].span[1]]


def test_metastases_in_the_impression_are_the_findings_group():
    r = parse_report("FINDINGS: Multiple pulmonary nodules in both lungs, consistent with metastases, the largest 14 mm "
                     "in the right upper lobe.\nIMPRESSION: Decreasing pulmonary metastases.")
    assert len(r.findings) == 1
    f = r.findings[0]
    assert f.size_mm == [14.0] and f.location.lobe == "RUL" and f.count >= 2 and f.stability == "decreasing"


@pytest.mark.parametrize("text, lobe, segment, composition", [
    ("A 5 mm nodle in the right upper lobe.", "RUL", None, None),
    ("Small nodule in the right lower love, 3 mm.", "RLL", None, None),
    ("4 mm nodule in the lingual.", "LUL", "lingula", None),
    ("12 mm PSN in the left upper lobe.", "LUL", None, "part-solid"),
    ("An 8 mm GGN in the RLL.", "RLL", None, "ground-glass"),
    ("4 mm nodule in the left uper lobe.", "LUL", None, None),
    ("4 mm nodule in the rigth lower lobe.", "RLL", None, None),
])
def test_dictation_typos_and_abbreviations_still_give_the_nodule(text, lobe, segment, composition):
    f = one(text)
    assert f.size_mm and f.location.lobe == lobe and getattr(f.location, "segment", None) == segment
    assert f.composition == composition


@pytest.mark.parametrize("text", ["Lung nodules: none.", "Pulmonary nodules: none.", "Nodules: none."])
def test_a_nodule_header_answered_none_is_a_negative(text):
    f = one(text)
    assert f.negated and f.count == 0


def test_no_residual_nodule_is_negated_unless_it_restates_a_resolution():
    f = one("No residual nodule in the right middle lobe.")
    assert f.negated and f.location.lobe == "RML"
    r = parse_report("The previously seen 5 mm right middle lobe nodule has resolved. No residual nodule.")
    assert len(r.findings) == 1 and r.findings[0].prior_size_mm == [5.0]


@pytest.mark.parametrize("text, stability", [
    ("6 mm RUL nodule adjacent to an enlarged 18 mm right hilar lymph node.", None),
    ("4 mm LLL nodule next to an enlarged 16 mm subcarinal lymph node.", None),
    ("No interval growth of the 4 mm LLL nodule.", "stable"),
    ("Enlarging 9 mm nodule in the left upper lobe next to a 15 mm lymph node.", "enlarging"),
])
def test_stability_words_about_other_things_do_not_reach_the_nodule(text, stability):
    assert one(text).stability == stability


@pytest.mark.parametrize("text, count", [
    ("Several calcified granulomata bilaterally.", 3),
    ("Scattered calcified granulomas in both lungs.", 2),
])
def test_granulomata_are_calcified_nodules(text, count):
    f = one(text)
    assert f.composition == "calcified" and f.count == count and f.location.side == "bilateral"


def test_mixed_response_is_no_composition():
    f = one("Mixed response: the 8 mm RUL nodule has decreased.")
    assert f.composition is None and f.stability == "decreasing"
    assert one("Mixed attenuation nodule in the RUL, 9 mm.").composition == "part-solid"
    assert one("A 9 mm mixed nodule in the right upper lobe.").composition == "part-solid"


@pytest.mark.parametrize("text, size, prior", [
    ("Left lower lobe nodule 7 mm (5 mm on 01/2024).", [7.0], [5.0]),
    ("RUL nodule 8 mm (6 mm in March 2024).", [8.0], [6.0]),
    ("The 9 mm LUL nodule, which was previously described as 6 mm, has increased.", [9.0], [6.0]),
    ("RML nodule 5 -> 8 mm.", [8.0], [5.0]),
    ("Ground-glass nodule in the RUL: 10 \u2192 13 mm.", [13.0], [10.0]),
    ("RUL nodule 8 mm -> 11 mm.", [11.0], [8.0]),
])
def test_prior_sizes_in_brackets_clauses_and_arrows_are_history_not_findings(text, size, prior):
    f = one(text)
    assert f.size_mm == size and f.prior_size_mm == prior and f.stability == "enlarging"


@pytest.mark.parametrize("text, expected", [
    ("Nodules in the left upper and right lower lobes measure 5 and 3 mm respectively.", [([5.0], "LUL"), ([3.0], "RLL")]),
    ("Nodules in the right upper lobe and left lower lobe measure 9 and 4 mm respectively.", [([9.0], "RUL"), ([4.0], "LLL")]),
    ("Nodules: RML 5 mm (stable); LUL 2 mm (stable).", [([5.0], "RML"), ([2.0], "LUL")]),
    ("Right upper lobe and left lower lobe nodules measuring 3 mm and 7 mm.", [([3.0], "RUL"), ([7.0], "LLL")]),
    ("Right middle lobe and lingular nodules measuring 4 mm and 6 mm.", [([4.0], "RML"), ([6.0], "LUL")]),
    ("Nodules in the right upper and lower lobes measure 4 and 6 mm.", [([4.0], "RUL"), ([6.0], "RLL")]),
])
def test_listed_places_pair_with_listed_sizes_in_order(text, expected):
    assert [(f.size_mm, f.location.lobe) for f in parse_report(text).findings] == expected


def test_a_group_over_two_lungs_has_no_one_lobe():
    f = one("Nodules in the right upper and left lower lobes.")
    assert f.location.side == "bilateral" and f.location.lobe is None


@pytest.mark.parametrize("text", [
    "Nodule in the left breast measuring 11 mm.",
    "Nodule in the right breast measuring 9 mm.",
    "Nodule in the left thyroid lobe, 12 mm.",
])
def test_a_nodule_in_another_organ_named_with_its_side_is_no_lung_finding(text):
    assert parse_report(text).findings == []


@pytest.mark.parametrize("text, hedged", [
    ("6 mm RML nodule and 4 mm LUL nodule, possibly an intrapulmonary lymph node.", [False, True]),
    ("A 4 mm RUL nodule, possibly a granuloma, and a 6 mm LLL nodule.", [True, False]),
    ("A 4 mm RUL nodule and a possible 6 mm LLL nodule.", [False, True]),
    ("6 mm RML nodule and 4 mm LUL nodule, possibly intrapulmonary lymph nodes.", [True, True]),
    ("6 mm RML nodule and 4 mm LUL nodule, possibly granulomas.", [True, True]),
])
def test_a_hedge_belongs_to_the_nodule_it_is_written_with(text, hedged):
    assert [f.hedged for f in parse_report(text).findings] == hedged


def test_two_nodules_restated_together_in_the_impression_count_once():
    r = parse_report("FINDINGS:\nLungs: There is a 4 mm solid nodule in the left upper lobe (series 3, image 52), unchanged. "
                     "There is also a 3 mm solid nodule in the right lower lobe (series 3, image 190), unchanged.\n"
                     "IMPRESSION:\n1. Stable 4 mm LUL and 3 mm RLL solid nodules.")
    assert [(f.size_mm, f.location.lobe, f.image_ref.image) for f in r.findings] == [([4.0], "LUL", 52), ([3.0], "RLL", 190)]


def test_both_after_a_list_gives_each_its_stability():
    r = parse_report("9 mm RUL ground-glass nodule and 5 mm LLL solid nodule, both new.")
    assert [(f.location.lobe, f.composition, f.stability) for f in r.findings] == [
        ("RUL", "ground-glass", "new"), ("LLL", "solid", "new")]


@pytest.mark.parametrize("text", [
    "Nodule 1:\nLocation: RLL, lateral basal\nSize: 6 mm\nType: solid\nSeries/Image: 2/88\n",
    "Nodule 1: RLL lateral basal, 6 mm, Type: solid, Series/Image: 2/88.",
    "Nodule 1: RLL lateral basal. 6 mm. Type: solid. Series/Image: 2/88.",
    "Nodule 1: 6 mm solid nodule in the RLL, lateral basal (series 2, image 88).",
])
def test_a_numbered_nodule_line_or_block_is_one_finding_with_all_its_fields(text):
    f = one(text)
    assert (f.size_mm, f.location.lobe, f.location.segment, f.composition, f.image_ref.series, f.image_ref.image) == (
        [6.0], "RLL", "lateral basal", "solid", 2, 88)


def test_three_listed_lobes_pair_with_three_sizes():
    r = parse_report("Nodules in the right upper, middle and left lower lobes measure 9, 5 and 4 mm respectively.")
    assert [(f.size_mm, f.location.lobe) for f in r.findings] == [([9.0], "RUL"), ([5.0], "RML"), ([4.0], "LLL")]


def test_each_listed_size_keeps_its_own_stability_word():
    r = parse_report("Nodules: RUL 4 mm (stable); LLL 3 mm (new).")
    assert [(f.location.lobe, f.stability) for f in r.findings] == [("RUL", "stable"), ("LLL", "new")]
    r = parse_report("Bilateral lower lobe nodules, 4 mm on the right and 6 mm on the left, unchanged.")
    assert [f.stability for f in r.findings] == ["stable", "stable"]


@pytest.mark.parametrize("text", ["A 5 mm nodual in the RUL.", "Left lower lobe nodul 4 mm.", "A 5 mm nodlue in the RUL."])
def test_more_misspelt_nodules_are_found(text):
    assert one(text).size_mm


def test_none_identified_under_a_nodule_header_is_a_negative():
    f = one("Nodules: None identified.")
    assert f.negated and f.count == 0


@pytest.mark.parametrize("text, expected", [
    ("Mixed response: decrease of the RUL nodule (now 8 mm), new 5 mm LLL nodule.", [("RUL", "decreasing"), ("LLL", "new")]),
    ("Mixed treatment response with a decreasing 12 mm RUL mass and enlarging 7 mm LLL nodule.",
     [("RUL", "decreasing"), ("LLL", "enlarging")]),
    ("The 5 mm RML nodule is stable and the LLL nodule is new.", [("RML", "stable"), ("LLL", "new")]),
])
def test_a_stability_word_opening_a_noun_phrase_is_that_nodules(text, expected):
    r = parse_report(text)
    assert [(f.location.lobe, f.stability) for f in r.findings] == expected
    assert all(f.composition is None for f in r.findings)


def test_mixed_density_is_still_part_solid():
    assert one("Mixed-density nodule in the RUL, 10 mm.").composition == "part-solid"


@pytest.mark.parametrize("text, segment", [
    ("Nodule 1:\nLobe: LLL\nSegment: lateral basal\nSize: 6 mm\nType: solid\nSe/Im: 4/88\n", "lateral basal"),
    ("Nodule 1: Lobe: LLL. Segment: superior. Size: 6 mm. Type: solid. Series/Image: 4/88.", "superior"),
])
def test_a_template_segment_field_is_the_nodules_segment(text, segment):
    f = one(text)
    assert (f.location.lobe, f.location.segment, f.size_mm, f.image_ref.image) == ("LLL", segment, [6.0], 88)


def test_a_stability_phrase_said_of_listed_nodules_goes_to_each():
    r = parse_report("No interval growth of the 5 mm RML nodule or the 3 mm LLL nodule.")
    assert [(f.location.lobe, f.stability) for f in r.findings] == [("RML", "stable"), ("LLL", "stable")]
    r = parse_report("Interval increase in size of the RUL nodule, now 9 mm, and a new 4 mm LLL nodule.")
    assert [(f.location.lobe, f.stability) for f in r.findings] == [("RUL", "enlarging"), ("LLL", "new")]
