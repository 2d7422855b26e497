"""Paired radiology reports with a controlled, recorded relation to the truth.

A report is written the way chest CT reports are (exam, history, comparison, technique, findings by
organ system or as a narrative, impression with a recommendation), from many phrasings. Its relation to
the truth is drawn or forced (``SynthConfig.report_relation``) and recorded in ``truth["report"]``:

* ``concordant``: every nodule described with its true size (rounded as radiologists do);
* ``missed``: one nodule left out (the others described);
* ``undersized`` / ``oversized``: one nodule's stated mean diameter lies across a Fleischner 2017 / Lung-RADS
  v2022 size threshold from the true one (e.g. "5 mm" for a true 8.4 mm);
* ``negative``: "no pulmonary nodules" although there is at least one;
* ``hedged``: one nodule described with hedging ("cannot exclude", "possible");
* ``phantom``: a nodule described that is not in the images.

Every nodule sentence and every distractor (lymph nodes, aorta, liver, adrenal, thyroid sizes) is recorded
with its character span in the text.
"""

from __future__ import annotations

import numpy as np

from training.synthetic.config import ReportTables

LOBE_NAMES = {
    "RUL": ("right upper lobe", "RUL"), "RML": ("right middle lobe", "RML"), "RLL": ("right lower lobe", "RLL"),
    "LUL": ("left upper lobe", "LUL"), "LLL": ("left lower lobe", "LLL"),
}
COMP_WORDS = {
    "solid": ["solid", "solid", "soft tissue attenuation", "noncalcified solid"],
    "part-solid": ["part-solid", "partially solid", "mixed attenuation (part-solid)"],
    "ground-glass": ["ground-glass", "pure ground-glass", "nonsolid (ground-glass)"],
    "calcified": ["calcified", "densely calcified", "completely calcified"],
}


def needs(relation: str) -> dict:
    """What the nodules must allow for ``relation`` to be written."""
    if relation in ("missed", "negative", "hedged", "oversized"):
        return {"min_nodules": 1}
    if relation == "undersized":
        return {"min_nodules": 1, "first_solid_mm": (7.5, 18.0)}
    return {"min_nodules": 0}


class _Builder:
    def __init__(self):
        self.parts: list[str] = []
        self.n = 0

    def add(self, text: str) -> tuple[int, int]:
        start = self.n
        self.parts.append(text)
        self.n += len(text)
        return start, self.n

    def text(self) -> str:
        return "".join(self.parts)


def _fmt_mm(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 1e-6 else f"{v:.1f}"


def _size_text(rng, axes_mm: list[float], cm: bool) -> str:
    if cm:
        vals = [f"{a / 10:.1f}" for a in axes_mm]
        return " x ".join(vals) + " cm"
    return " x ".join(_fmt_mm(a) for a in axes_mm) + " mm"


def _lungrads(tables: ReportTables, comp: str, mean: float, solid: float | None) -> str:
    if comp == "calcified":
        return "1"
    if comp == "ground-glass":
        table = tables.lungrads_ggo_mm
        return next(c for lim, c in table if mean < lim)
    if comp == "part-solid":
        if mean < tables.lungrads_part_solid_total_mm:
            return "2"
        s = solid if solid is not None else 0.0
        return next(c for lim, c in tables.lungrads_part_solid_solid_mm if s < lim)
    return next(c for lim, c in tables.lungrads_solid_mm if mean < lim)


_LR_ORDER = ["0", "1", "2", "3", "4A", "4B", "4X"]
_LR_TEXT = {
    "1": ("negative", "Continue annual screening with LDCT in 12 months."),
    "2": ("benign appearance or behavior", "Continue annual screening with LDCT in 12 months."),
    "3": ("probably benign", "Recommend 6-month LDCT."),
    "4A": ("suspicious", "Recommend 3-month LDCT; PET/CT may be considered if there is a solid component of 8 mm or larger."),
    "4B": ("very suspicious", "Recommend chest CT with or without contrast, PET/CT and/or tissue sampling."),
}


def _fleischner_rec(comp: str, mean: float, multiple: bool) -> str:
    if comp == "calcified":
        return "No follow-up is needed for the calcified (benign) nodule."
    if comp == "ground-glass":
        return ("No routine follow-up is required." if mean < 6 else
                "Per Fleischner Society 2017 guidelines, CT at 6-12 months to confirm persistence, then every 2 years until 5 years.")
    if comp == "part-solid":
        return ("No routine follow-up is required." if mean < 6 else
                "Per Fleischner Society 2017 guidelines, CT at 3-6 months to confirm persistence; if unchanged and the solid component remains < 6 mm, annual CT for 5 years.")
    if mean < 6:
        return ("No routine follow-up is required for a low-risk patient; optional CT at 12 months if high risk "
                "(Fleischner Society 2017).")
    if mean <= 8:
        return ("Recommend CT at 6-12 months, then consider CT at 18-24 months (Fleischner Society 2017)."
                if not multiple else "Recommend CT at 3-6 months, then consider CT at 18-24 months (Fleischner Society 2017).")
    return "Consider CT at 3 months, PET/CT, or tissue sampling (Fleischner Society 2017)."


def _stated_axes(rng, long_mm: float, short_mm: float, target_mean: float | None) -> list[float]:
    """Axes as a radiologist writes them (whole mm), scaled to ``target_mean`` when given."""
    if target_mean is not None:
        f = target_mean / max((long_mm + short_mm) / 2.0, 1e-6)
        long_mm, short_mm = long_mm * f, short_mm * f
    L = max(1.0, float(np.round(long_mm)))
    S = max(1.0, min(L, float(np.round(short_mm))))
    return [L, S]


def make_report(rng: np.random.Generator, nodules: list[dict], *, relation: str, screening: bool, meta: dict,
                anat, tables: ReportTables) -> tuple[str, dict]:
    """Write the report for these truth nodules; returns ``(text, truth_report)``."""
    thresholds = sorted(tables.size_thresholds_mm)
    rel = relation
    noncalc = [n for n in nodules if n["composition"] != "calcified"]
    pool = noncalc or nodules
    target = None
    if rel in ("missed", "hedged", "negative") and not nodules:
        rel = "concordant"
    if rel == "undersized":
        cands = [n for n in pool if n["mean_diameter_mm"] >= thresholds[0] + 1.0]
        target = max(cands, key=lambda n: n["mean_diameter_mm"]) if cands else None
        if target is None:
            rel = "concordant"
    elif rel == "oversized":
        cands = [n for n in pool if n["mean_diameter_mm"] < thresholds[-1] - 1.0]
        target = cands[int(rng.integers(len(cands)))] if cands else None
        if target is None:
            rel = "concordant"
    elif rel in ("missed", "hedged"):
        target = pool[int(rng.integers(len(pool)))]

    has_prior = bool(rng.random() < min(1.0, tables.prior_probability * (2.0 if screening else 1.0)))
    prior_date = f"20{int(rng.integers(22, 26))}-{int(rng.integers(1, 13)):02d}-{int(rng.integers(1, 29)):02d}"
    series_no = int(meta.get("series_number", 3))
    per_nodule: list[dict] = []
    stated_for_cat: list[tuple[str, float, float | None]] = []

    def nodule_sentence(n: dict, mode: str) -> tuple[str, dict]:
        """mode: concordant | undersized | oversized | hedged."""
        comp = n["composition"]
        lobe_full, lobe_abbr = LOBE_NAMES.get(n["lobe"] or "", (f"{n['side']} lung", None))
        lobe_txt = lobe_full if rng.random() < 0.75 or lobe_abbr is None else lobe_abbr
        cm = bool(rng.random() < tables.cm_probability) and n["mean_diameter_mm"] >= 8
        target_mean = None
        if mode == "undersized":
            ts = [t for t in thresholds if t <= n["mean_diameter_mm"] - 1.0]
            t = ts[int(rng.integers(len(ts)))]
            target_mean = max(2.0, t - float(rng.uniform(1.2, 2.8)))
        elif mode == "oversized":
            ts = [t for t in thresholds if t >= n["mean_diameter_mm"] + 1.0]
            t = ts[0]
            target_mean = t + float(rng.uniform(1.2, 3.0))
        axes = _stated_axes(rng, n["long_axis_mm"], n["short_axis_mm"], target_mean)
        if mode == "undersized":
            while (axes[0] + axes[1]) / 2 >= t and axes[0] > 1:
                axes = [axes[0] - 1, min(axes[1], axes[0] - 1)]
        if mode == "oversized":
            while (axes[0] + axes[1]) / 2 < t:
                axes = [axes[0] + 1, axes[1] + 1]
        single = bool(rng.random() < 0.3)
        if single:
            stated = [float(np.round((axes[0] + axes[1]) / 2.0))] if mode != "concordant" else \
                [float(np.round(n["mean_diameter_mm"]))]
            if mode == "undersized":
                stated = [min(stated[0], np.ceil(t) - 1.0)]
            if mode == "oversized":
                stated = [max(stated[0], np.floor(t) + 1.0)]
        else:
            stated = axes
        mean_stated = float(np.mean(stated))
        size_txt = _size_text(rng, stated, cm)
        inst = n["instance_number"]
        ref = [f"(series {series_no}, image {inst})", f"(image {inst})", f"({series_no}:{inst})",
               f"on image {inst}", f"(series {series_no} image {inst})"][int(rng.integers(5))]
        cw = COMP_WORDS[comp][int(rng.integers(len(COMP_WORDS[comp])))]
        solid_txt = ""
        solid_stated = None
        if comp == "part-solid" and n.get("solid_component_mm"):
            sc = n["solid_component_mm"]
            if target_mean is not None:
                sc = sc * target_mean / max(n["mean_diameter_mm"], 1e-6)
            solid_stated = max(1.0, float(np.round(sc)))
            solid_txt = f" with a {_fmt_mm(solid_stated)} mm solid component"
        where = ""
        if n["placement"] == "juxtapleural":
            where = [" pleural-based", " subpleural", " juxtapleural"][int(rng.integers(3))]
        margin = ""
        if n["shape"] == "spiculated":
            margin = [" with spiculated margins", ", spiculated", " with irregular spiculated margins"][int(rng.integers(3))]
        elif n["shape"] == "lobulated":
            margin = [" with lobulated contours", ", lobulated"][int(rng.integers(2))]
        prior = None
        prior_txt = ""
        if has_prior and rng.random() < 0.7:
            growth = float(rng.uniform(0.7, 1.0))
            prior = [max(1.0, float(np.round(s * growth))) for s in stated]
            if prior == stated:
                prior_txt = [", unchanged from prior", ", stable compared to prior",
                             f", previously {_size_text(rng, prior, cm)}"][int(rng.integers(3))]
            else:
                prior_txt = [f", previously {_size_text(rng, prior, cm)}",
                             f" (previously {_size_text(rng, prior, cm)} on {prior_date})",
                             f", increased from {_size_text(rng, prior, cm)}"][int(rng.integers(3))]
        if comp == "calcified" and rng.random() < 0.5:
            templates = [f"{size_txt} calcified granuloma in the {lobe_txt}{where} {ref}, benign.",
                         f"Calcified granuloma in the {lobe_txt} measuring {size_txt} {ref}."]
        elif mode == "hedged":
            templates = [
                f"Possible {size_txt} {cw} nodule in the {lobe_txt} {ref}, versus vessel seen end-on.",
                f"Cannot exclude a {size_txt} {cw} nodule in the {lobe_txt} {ref}.",
                f"Questionable {size_txt} nodular opacity in the {lobe_txt} {ref}, which may represent a vessel or a small nodule.",
                f"Indeterminate {size_txt} {cw} density in the {lobe_txt}{where} {ref}; a nodule cannot be excluded.",
            ]
        else:
            templates = [
                f"There is a {size_txt} {cw}{where} nodule in the {lobe_txt}{solid_txt}{margin} {ref}{prior_txt}.",
                f"{lobe_txt[0].upper() + lobe_txt[1:]}:{where} {cw} nodule measuring {size_txt}{solid_txt}{margin} {ref}{prior_txt}.",
                f"A {cw}{where} pulmonary nodule in the {lobe_txt} measures {size_txt}{solid_txt} {ref}{prior_txt}.",
                f"{size_txt[0].upper() + size_txt[1:]} {cw} nodule{margin} in the {lobe_txt}{solid_txt} {ref}{prior_txt}.",
                f"In the {lobe_txt} there is a{'n' if cw[0] in 'aeiou' else ''} {cw}{where} nodule measuring {size_txt}{solid_txt} {ref}{prior_txt}.",
            ]
        sent = templates[int(rng.integers(len(templates)))]
        rec = {
            "nodule_id": n["id"], "mentioned": True, "relation": mode,
            "stated_size_mm": [round(s * (1.0 if not cm else 1.0), 1) for s in stated],
            "stated_unit": "cm" if cm else "mm", "stated_mean_mm": round(mean_stated, 2),
            "true_mean_mm": n["mean_diameter_mm"], "stated_lobe": n["lobe"], "stated_side": n["side"],
            "stated_composition": comp, "solid_component_stated_mm": solid_stated,
            "prior_size_mm": prior, "image_ref": {"series": series_no, "image": inst},
            "hedged": mode == "hedged", "crossed_threshold_mm": (t if mode in ("undersized", "oversized") else None),
            "text": sent,
        }
        if cm:
            # cm values are written with one decimal: record the value as written (mm)
            rec["stated_size_mm"] = [round(float(f"{s / 10:.1f}") * 10, 1) for s in stated]
            rec["stated_mean_mm"] = round(float(np.mean(rec["stated_size_mm"])), 2)
        return sent, rec

    # ---- decide mentions
    mentions: list[tuple[str, dict]] = []
    for n in sorted(nodules, key=lambda n: -n["mean_diameter_mm"]):
        if rel == "negative" or (rel == "missed" and n is target):
            per_nodule.append({"nodule_id": n["id"], "mentioned": False,
                               "relation": "negated" if rel == "negative" else "missed",
                               "true_mean_mm": n["mean_diameter_mm"], "text": None, "span": None})
            continue
        mode = rel if (n is target and rel in ("undersized", "oversized", "hedged")) else "concordant"
        sent, rec = nodule_sentence(n, mode)
        mentions.append((sent, rec))
        stated_for_cat.append((n["composition"], rec["stated_mean_mm"], rec["solid_component_stated_mm"]))
    phantom = None
    if rel == "phantom":
        lobe = ["RUL", "RML", "RLL", "LUL", "LLL"][int(rng.integers(5))]
        size = [float(rng.integers(5, 13))]
        if rng.random() < 0.5:
            size = [size[0], max(3.0, size[0] - float(rng.integers(1, 4)))]
        inst = int(rng.integers(1, 60))
        txt = (f"There is a {_size_text(rng, size, False)} solid nodule in the {LOBE_NAMES[lobe][0]} "
               f"(series {series_no}, image {inst}).")
        phantom = {"nodule_id": None, "mentioned": True, "relation": "phantom", "stated_size_mm": size,
                   "stated_unit": "mm", "stated_mean_mm": float(np.mean(size)), "stated_lobe": lobe,
                   "stated_side": "right" if lobe[0] == "R" else "left", "stated_composition": "solid",
                   "image_ref": {"series": series_no, "image": inst}, "hedged": False, "text": txt}
        mentions.insert(int(rng.integers(len(mentions) + 1)), (txt, phantom))
        stated_for_cat.append(("solid", phantom["stated_mean_mm"], None))

    # ---- category and recommendation from the report's own statements
    stated_category = None
    recommendation = None
    if screening:
        cats = [_lungrads(tables, c, m, s) for c, m, s in stated_for_cat] or ["1"]
        stated_category = max(cats, key=_LR_ORDER.index)
        recommendation = _LR_TEXT[stated_category][1]
    else:
        if stated_for_cat:
            c, m, s = max(stated_for_cat, key=lambda x: (x[0] != "calcified", x[1]))
            recommendation = _fleischner_rec(c, m, len(stated_for_cat) > 1)
        else:
            recommendation = "No pulmonary nodule follow-up is needed."

    # ---- write
    b = _Builder()
    distractors: list[dict] = []
    if screening:
        b.add(["EXAM: Low-dose CT chest for lung cancer screening.\n",
               "EXAMINATION: LDCT LUNG CANCER SCREENING\n",
               "CT CHEST LOW DOSE SCREENING WITHOUT CONTRAST\n"][int(rng.integers(3))])
        b.add(["\nCLINICAL HISTORY: ", "\nINDICATION: ", "\nHISTORY: "][int(rng.integers(3))])
        b.add(f"{int(rng.integers(55, 78))}-year-old {['current', 'former'][int(rng.integers(2))]} smoker, "
              f"{int(rng.integers(20, 60))} pack-years. {['Annual', 'Baseline', 'Follow-up'][int(rng.integers(3))]} lung cancer screening.\n")
    else:
        b.add(["EXAM: CT chest without contrast.\n", "EXAMINATION: CT THORAX WITHOUT IV CONTRAST\n",
               "CT CHEST WO CONTRAST\n", "EXAM: CT of the chest.\n"][int(rng.integers(4))])
        b.add(["\nHISTORY: ", "\nCLINICAL INDICATION: ", "\nREASON FOR EXAM: "][int(rng.integers(3))])
        b.add(["Cough for 3 weeks.", "Shortness of breath.", "Chest pain, rule out pneumonia.",
               "Abnormal chest radiograph.", "Follow-up of pulmonary nodule.", "Preoperative evaluation.",
               "Hemoptysis."][int(rng.integers(7))] + "\n")
    b.add("\nCOMPARISON: " + (f"CT chest {prior_date}.\n" if has_prior else "None.\n"))
    T = meta.get("slice_thickness_mm")
    tech = ["Helical CT images of the chest were obtained from the thoracic inlet through the upper abdomen "
            "without intravenous contrast.",
            "Axial images of the chest were acquired without IV contrast. Coronal and sagittal reformats were reviewed.",
            "Non-contrast low-dose helical CT of the chest."][int(rng.integers(3))]
    b.add(f"\nTECHNIQUE: {tech} Images reconstructed at {T:g} mm. CTDIvol {meta.get('ctdi_vol_mgy', 0):.1f} mGy.\n")
    b.add(["\nFINDINGS:\n", "\nFindings:\n"][int(rng.integers(2))])

    structured = bool(rng.random() < 0.6)
    nodule_records: list[dict] = []

    def lungs_section():
        if structured:
            b.add(["LUNGS AND AIRWAYS: ", "Lungs: ", "LUNGS: "][int(rng.integers(3))])
        if anat.emphysema > 0.12:
            b.add(["Moderate centrilobular emphysema, upper lobe predominant. ",
                   "Centrilobular emphysema. "][int(rng.integers(2))])
        elif anat.emphysema > 0:
            b.add("Mild centrilobular emphysema. ")
        b.add("The central airways are patent. ")
        if rel == "negative":
            neg = ["No pulmonary nodules.", "No suspicious pulmonary nodules or masses are identified.",
                   "The lungs are clear without focal nodule or mass.", "No noncalcified pulmonary nodules."][
                int(rng.integers(4))]
            s = b.add(neg + " ")
            for rec in per_nodule:
                rec["span"] = [s[0], s[0] + len(neg)]
                rec["text"] = neg
        elif not mentions:
            if nodules:  # missed with a single nodule: silent about nodules
                b.add(["Mild dependent atelectasis. No consolidation. ", "No consolidation or effusion. "]
                      [int(rng.integers(2))])
            else:
                b.add(["No pulmonary nodules. ", "No suspicious pulmonary nodules. ",
                       "The lungs are clear. "][int(rng.integers(3))])
        for sent, rec in mentions:
            s = b.add(sent + " ")
            rec["span"] = [s[0], s[0] + len(sent)]
            nodule_records.append(rec)
        if rel != "negative" and mentions and rng.random() < 0.3:
            b.add("No other suspicious nodules. ")
        b.add("\n" if structured else "")

    def other_sections():
        parts = []
        # pleura
        parts.append(("PLEURA: " if structured else "") + "No pleural effusion or pneumothorax. ")
        # mediastinum with lymph node distractor
        med = ("MEDIASTINUM AND HILA: " if structured else "")
        if rng.random() < 0.5:
            ln = [float(rng.integers(6, 15)), float(rng.integers(4, 10))]
            ln[1] = min(ln[1], ln[0])
            station = ["right paratracheal", "subcarinal", "prevascular", "left hilar", "right hilar"][int(rng.integers(5))]
            txt = f"A {_size_text(rng, ln, False)} {station} lymph node is noted"
            txt += [", not enlarged by size criteria. ", ". ", ", likely reactive. "][int(rng.integers(3))]
            parts.append(med + "@@" + txt)
            distractors.append({"kind": "lymph_node", "size_mm": ln, "text": txt.strip()})
        else:
            parts.append(med + "No mediastinal, hilar or axillary lymphadenopathy. ")
        heart = ("HEART AND VESSELS: " if structured else "") + "Heart size is normal. No pericardial effusion. "
        if anat.coronary:
            heart += ["Coronary artery calcifications. ", "Mild coronary artery calcification. "][int(rng.integers(2))]
        if rng.random() < 0.4:
            ao = float(rng.uniform(2.8, 4.3))
            txt = f"The ascending aorta measures {ao:.1f} cm. "
            parts.append(heart + "@@" + txt)
            distractors.append({"kind": "aorta", "size_mm": [round(ao * 10, 1)], "text": txt.strip()})
        else:
            parts.append(heart)
        abd = ("UPPER ABDOMEN: " if structured else "")
        r = rng.random()
        if r < 0.25:
            c = float(rng.integers(6, 25))
            txt = f"A {_fmt_mm(c / 10)} cm hypodensity in the liver is too small to characterize, likely a cyst. "
            parts.append(abd + "@@" + txt)
            distractors.append({"kind": "liver_lesion", "size_mm": [c], "text": txt.strip()})
        elif r < 0.4:
            c = float(rng.integers(8, 20))
            txt = f"{c:.0f} mm left adrenal nodule, likely an adenoma. "
            parts.append(abd + "@@" + txt)
            distractors.append({"kind": "adrenal_nodule", "size_mm": [c], "text": txt.strip()})
        else:
            parts.append(abd + "Visualized upper abdomen is unremarkable. ")
        if rng.random() < 0.15:
            c = float(rng.integers(8, 25))
            txt = f"{c:.0f} mm right thyroid nodule. "
            parts.append(("THYROID: " if structured else "") + "@@" + txt)
            distractors.append({"kind": "thyroid_nodule", "size_mm": [c], "text": txt.strip()})
        parts.append(("BONES AND SOFT TISSUES: " if structured else "")
                     + ["Degenerative changes of the thoracic spine. No aggressive osseous lesion. ",
                        "No acute osseous abnormality. ", "Osseous structures are intact. "][int(rng.integers(3))])
        k = 0
        for p in parts:
            if "@@" in p:
                pre, txt = p.split("@@")
                b.add(pre)
                s = b.add(txt)
                distractors[k]["span"] = [s[0], s[0] + len(txt.rstrip())]
                k += 1
            else:
                b.add(p)
            b.add("\n" if structured else "")

    lungs_section()
    other_sections()
    b.add(["\n\nIMPRESSION:\n", "\n\nImpression:\n", "\n\nIMPRESSION: \n"][int(rng.integers(3))])
    items = []
    if rel == "negative" or (not mentions):
        items.append(["No suspicious pulmonary nodules.", "No pulmonary nodules.",
                      "No acute cardiopulmonary abnormality."][int(rng.integers(3))])
    else:
        top = max(nodule_records, key=lambda r: r["stated_mean_mm"])
        lobe = LOBE_NAMES.get(top["stated_lobe"] or "", ("lung", None))[0]
        sz = _size_text(rng, top["stated_size_mm"], top["stated_unit"] == "cm") if top["stated_unit"] != "cm" \
            else _size_text(rng, top["stated_size_mm"], True)
        if top.get("hedged"):
            items.append(f"Possible {sz} nodule in the {lobe}; a vessel is favored but a nodule cannot be excluded.")
        else:
            more = len(nodule_records) - 1
            items.append(f"{sz[0].upper() + sz[1:]} {top['stated_composition']} nodule in the {lobe}"
                         + (f", and {more} additional nodule{'s' if more > 1 else ''} as described." if more > 0 else "."))
    if anat.emphysema > 0.12:
        items.append("Emphysema.")
    if screening:
        desc, rec_txt = _LR_TEXT[stated_category]
        items.append(f"Lung-RADS category {stated_category}: {desc}. {rec_txt}")
    else:
        items.append(recommendation)
    for i, it in enumerate(items, 1):
        b.add(f"{i}. {it}\n")
    text = b.text()
    # sanity: recorded spans point at the recorded sentences
    for rec in nodule_records:
        assert text[rec["span"][0]:rec["span"][1]] == rec["text"]
    per_nodule += [r for r in nodule_records if r["relation"] != "phantom"]
    per_nodule.sort(key=lambda r: (r["nodule_id"] is None, r["nodule_id"] or 0))
    report_truth = {
        "relation": rel, "requested_relation": relation, "screening": screening,
        "guideline": "Lung-RADS v2022" if screening else "Fleischner 2017",
        "stated_category": stated_category, "recommendation": recommendation,
        "target_nodule_id": target["id"] if target is not None else None,
        "per_nodule": per_nodule, "phantom_findings": [phantom] if phantom else [],
        "distractors": distractors, "comparison": prior_date if has_prior else None,
        "size_thresholds_mm": thresholds,
    }
    if phantom is not None:
        phantom["span"] = [text.index(phantom["text"]), text.index(phantom["text"]) + len(phantom["text"])]
    return text, report_truth
