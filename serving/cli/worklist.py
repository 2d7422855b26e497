"""``preread worklist``: the worklist from the local store, most urgent first."""

from __future__ import annotations

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("worklist")
    def worklist_cmd(
        status: list[str] = typer.Option(None, "--status", help="queued | running | done | failed (repeatable)"),
        verdict: list[str] = typer.Option(None, "--verdict", help="discordant | concordant | indeterminate"),
        limit: int = typer.Option(50, "--limit", min=1, max=500),
        json_path: str = typer.Option(None, "--json", help="write the page as JSON here ('-' = stdout)"),
    ) -> None:
        """List studies by priority (most severe discordance, then priority, then waiting time)."""
        from pipelines.errors import ServingError
        from serving.db import Database
        from serving.migrate import upgrade
        from serving.settings import load_settings
        from serving.store import Store, WorklistQuery

        for s in status or []:
            if s not in ("queued", "running", "done", "failed"):
                raise ServingError(f"unknown status {s!r}", hint="use queued, running, done or failed")
        for v in verdict or []:
            if v not in ("discordant", "concordant", "indeterminate"):
                raise ServingError(f"unknown verdict {v!r}", hint="use discordant, concordant or indeterminate")
        settings = load_settings()
        settings.ensure_dirs()
        db = Database(settings.db_url)
        try:
            upgrade(db, settings.data_dir / "migrate.lock")
            page = Store(db).worklist(WorklistQuery(status=status or None, verdict=verdict or None, limit=limit))
        finally:
            db.dispose()
        if json_path:
            write_json(page, json_path)
            return
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"worklist ({page['total']} studies)")
        for col in ("id", "status", "verdict", "severity", "priority", "AI", "disc.", "waiting s", "review"):
            table.add_column(col)
        for it in page["items"]:
            table.add_row(it["id"][:8], it["status"], it["verdict"] or "", it["max_severity"] or "",
                          f"{it['priority']:.1f}", str(it["n_ai_findings"] if it["n_ai_findings"] is not None else ""),
                          str(it["n_discordances"] if it["n_discordances"] is not None else ""),
                          f"{it['waiting_s']:.0f}", (it["review"] or {}).get("action", ""))
        Console().print(table)
