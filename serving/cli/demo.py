"""``preread demo``: synthetic studies with paired reports, analysed, shown as a worklist sorted by priority."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from serving.cli._common import write_json

log = logging.getLogger(__name__)

# One study per report relation, so the worklist shows each kind of disagreement next to concordant reads.
DEMO_RELATIONS = ("concordant", "undersized", "negative", "missed", "hedged", "concordant")


def run_demo(out: Path, *, n: int, seed: int, preset: str, backend: str, device: str | None) -> list[dict]:
    from pipelines.analyze import AnalyzeOptions, analyze_study
    from training.synthetic import SynthConfig, make_study, write_study

    rows: list[dict] = []
    for idx in range(n):
        relation = DEMO_RELATIONS[idx % len(DEMO_RELATIONS)]
        cfg = SynthConfig.preset(preset, report_relation=relation)
        study = make_study(seed + idx, cfg)
        name = f"study-{idx + 1:02d}-{relation}"
        study_dir = write_study(study, out / "studies" / name)
        result_dir = out / "results" / name
        opts = AnalyzeOptions(backend=backend, device=device, waited_s=60.0 * (n - idx))
        result = analyze_study(study_dir / "dicom", (study_dir / "report.txt").read_text(), out_dir=result_dir,
                               options=opts)
        write_json(result, str(result_dir / "result.json"))
        top = result.discordances[0] if result.discordances else None
        rows.append({
            "study": name, "intended": relation, "verdict": result.verdict, "priority": round(result.priority, 1),
            "severity": top.severity if top else "-", "type": top.type if top else "-",
            "why": top.explanation if top else "AI and report agree.",
            "ai_findings": len(result.ai_findings), "seconds": result.timings_s.get("total"),
            "result": str(result_dir / "result.json"),
        })
        log.info("demo study %d/%d analysed", idx + 1, n)
    rows.sort(key=lambda r: -r["priority"])
    return rows


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo_cmd(
        out: Path = typer.Option(Path("demo-out"), "--out", help="Folder for the studies and results."),
        n: int = typer.Option(len(DEMO_RELATIONS), "--n", min=1, max=50, help="Number of synthetic studies."),
        seed: int = typer.Option(9000, "--seed", help="First synthetic seed (the models never trained on these)."),
        preset: str = typer.Option("demo", "--preset", help="Synthetic preset: fast | demo | full."),
        backend: str = typer.Option("torch", "--backend"),
        device: str | None = typer.Option(None, "--device"),
        json_path: str | None = typer.Option(None, "--json", help="Also write the worklist as JSON."),
    ) -> None:
        """Make synthetic studies with paired reports, pre-read them, and print the worklist by priority."""
        from rich.console import Console
        from rich.table import Table

        console = Console()
        with console.status("making and analysing synthetic studies…"):
            rows = run_demo(out, n=n, seed=seed, preset=preset, backend=backend, device=device)
        colour = {"major": "bold red", "minor": "yellow", "info": "cyan", "-": "green"}
        table = Table(title="preread worklist (highest priority first)", show_lines=True)
        for col in ("#", "study", "verdict", "priority", "severity", "flag", "why", "report written as"):
            table.add_column(col, overflow="fold")
        for rank, r in enumerate(rows, start=1):
            table.add_row(str(rank), r["study"], r["verdict"], f"{r['priority']:.1f}",
                          f"[{colour.get(r['severity'], '')}]{r['severity']}[/]", r["type"], r["why"], r["intended"])
        console.print(table)
        console.print(f"Results, overlays (PNG) and DICOM SEG/SR under [bold]{out / 'results'}[/]; "
                      f"the studies themselves under [bold]{out / 'studies'}[/].")
        console.print("Synthetic data, research software: not a diagnosis, not for clinical use.")
        worklist = out / "worklist.json"
        write_json(rows, str(worklist))
        if json_path:
            write_json(rows, json_path)
