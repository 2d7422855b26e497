"""Negation and hedging: our NegEx/ConText-style rules against medspaCy's ConText, on the labelled set.

    python -m benchmarks.report_negation_medspacy   # needs medspacy importable (see below)

Detection is held fixed: both sides judge the same findings that ``pipelines.report`` finds; for each one
medspaCy's ConText (default rules, PyRuSH sentences) decides ``negated`` (``is_negated``) and ``hedged``
(``is_uncertain``) for the mention's span, and the usual scorer of ``benchmarks.report_parsing`` compares
both with the gold labels, dev and held-out separately. medspaCy pins numpy<2 and spaCy 3.7, which the
project's environment cannot take, so it is not a dependency: run this in a separate virtual environment
with ``pip install medspacy pydantic pyyaml charset-normalizer`` and ``PYTHONPATH`` set to the checkout.
Writes ``benchmarks/results/report_negation_medspacy.json``, which ``benchmarks.report_parsing`` shows.
"""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from benchmarks.report_parsing import evaluate, load_items
from pipelines.paths import REPO_ROOT


def main() -> int:
    try:
        import medspacy
        import spacy
    except ImportError:
        print("medspacy is not installed here; see this script's docstring", file=sys.stderr)
        return 2
    from pipelines.report import parse_report

    try:
        from loguru import logger  # PyRuSH logs every sentence at DEBUG through loguru

        logger.remove()
    except ImportError:
        pass
    nlp = medspacy.load()
    sentencizer = nlp.get_pipe("medspacy_pyrush")
    context = nlp.get_pipe("medspacy_context")

    def context_flags(sentence: str, a: int, b: int) -> tuple[bool, bool, bool]:
        doc = sentencizer(nlp.make_doc(sentence))
        span = doc.char_span(a, b, label="NODULE", alignment_mode="expand")
        if span is None:
            return False, False, False
        doc.ents = [span]
        doc = context(doc)
        ent = doc.ents[0]
        return bool(ent._.is_negated), bool(ent._.is_uncertain), bool(ent._.is_hypothetical)

    def parse_with_context(text: str, *, hypothetical_hedges: bool = False):
        parsed = parse_report(text)
        for f in parsed.findings:
            ms = getattr(f, "mention_span", None)
            s0, s1 = f.span
            if not ms:
                continue
            neg, unc, hyp = context_flags(text[s0:s1], ms[0] - s0, ms[1] - s0)
            f.negated, f.hedged = neg, unc or (hypothetical_hedges and hyp)
            f.count = 0 if neg else max(1, f.count)
        return parsed

    out = {"environment": {"python": platform.python_version(), "medspacy": medspacy.__version__,
                           "spacy": spacy.__version__},
           "method": "same findings; negated/hedged from medspaCy ConText default rules (is_negated, is_uncertain)",
           "splits": {}}
    for split in ("dev", "heldout"):
        items = load_items(split)
        ours, _ = evaluate(items)
        theirs, _ = evaluate(items, parse=parse_with_context)
        theirs_h, _ = evaluate(items, parse=lambda t: parse_with_context(t, hypothetical_hedges=True))
        out["splits"][split] = {k: {"ours": ours[k], "medspacy": theirs[k]} for k in ("negated", "hedged")}
        out["splits"][split]["hedged"]["medspacy_uncertain_or_hypothetical"] = theirs_h["hedged"]
        for k in ("negated", "hedged"):
            print(f"{split:8} {k:8} ours F1 {ours[k]['f1']:.3f} (P {ours[k]['precision']:.3f} R {ours[k]['recall']:.3f})"
                  f"   medspaCy ConText F1 {theirs[k]['f1']:.3f} (P {theirs[k]['precision']:.3f} R {theirs[k]['recall']:.3f})"
                  + (f"; counting is_hypothetical as hedged too: F1 {theirs_h[k]['f1']:.3f}" if k == "hedged" else ""))
    p = REPO_ROOT / "benchmarks" / "results" / "report_negation_medspacy.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
