"""``preread serve``: the worklist service (API, viewer and a local worker pool) on uvicorn."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        host: str = typer.Option(None, "--host", help="listen address (default PREREAD_HOST, 127.0.0.1)"),
        port: int = typer.Option(None, "--port", help="port (default PREREAD_PORT, 8000)"),
        workers: int = typer.Option(None, "--workers", help="local worker processes (default PREREAD_WORKERS, 1)"),
    ) -> None:
        """Serve the API and the viewer; studies are analysed by the local worker pool."""
        import uvicorn

        from serving.app import create_app
        from serving.settings import load_settings

        overrides = {k: v for k, v in (("host", host), ("port", port), ("workers", workers)) if v is not None}
        settings = load_settings(**overrides)
        app_ = create_app(settings, start_workers=True)
        uvicorn.run(app_, host=settings.host, port=settings.port, log_level="info", access_log=False)
