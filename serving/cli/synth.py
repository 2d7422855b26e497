"""``preread synth``: write synthetic chest CT studies with exact ground truth and paired reports."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import typer

from serving.cli._common import write_json

log = logging.getLogger(__name__)


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth_cmd(
        out: Path = typer.Option(..., "--out", help="Folder to write one sub-folder per study into."),
        n: int = typer.Option(1, "--n", min=1, max=10000, help="Number of studies."),
        seed: int = typer.Option(0, "--seed", min=0, help="Seed of the first study; study i uses seed + i."),
        preset: str = typer.Option("fast", "--preset", help="fast | faint | demo | full | clinical (configs/synthetic.yaml)."),
        relation: str | None = typer.Option(None, "--relation",
                                            help="Force the report's relation to the truth (concordant, missed, "
                                                 "undersized, oversized, negative, hedged, phantom)."),
        no_dicom: bool = typer.Option(False, "--no-dicom", help="Skip the DICOM series (NIfTI, truth, report only)."),
        json_path: str | None = typer.Option(None, "--json", help="Write a summary as JSON ('-' = stdout)."),
    ) -> None:
        """Write DIR/<study>/{dicom/, report.txt, truth.json, image.nii.gz, labels.nii.gz, lungs.nii.gz, lobes.nii.gz}."""
        from training.synthetic import SynthConfig, make_study, write_study

        cfg = SynthConfig.preset(preset, **({"report_relation": relation} if relation else {}))
        rows = []
        for i in range(n):
            s = seed + i
            t0 = time.perf_counter()
            study = make_study(s, cfg)
            folder = write_study(study, out / f"synth-{s:06d}", dicom=not no_dicom)
            rows.append({
                "study": folder.name, "path": str(folder), "seed": s, "study_uid": study.truth["study_uid"],
                "shape_ijk": study.truth["shape_ijk"], "spacing_mm": study.truth["spacing_mm"],
                "nodules": len(study.truth["nodules"]), "relation": study.truth["report"]["relation"],
                "screening": study.truth["report"]["screening"], "seconds": round(time.perf_counter() - t0, 2),
            })
            log.info("synthetic study %d/%d written", i + 1, n)
        summary = {"out": str(out), "preset": preset, "studies": rows}
        if json_path:
            write_json(summary, json_path)
        else:
            for r in rows:
                typer.echo(f"{r['path']}\t{r['nodules']} nodule(s)\treport: {r['relation']}")
