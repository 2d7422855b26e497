"""``preread token create --role ROLE``: a new API token, printed once on stdout (stored hashed)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    token_app = typer.Typer(help="API tokens for the service (stored hashed; shown once).", no_args_is_help=True)

    @token_app.command("create")
    def create_cmd(
        role: str = typer.Option(..., "--role", help="reader | submitter | admin"),
        name: str = typer.Option(None, "--name", help="who holds it (shown in the audit log)"),
    ) -> None:
        """Create a token with ROLE and print it."""
        from serving.auth import check_role, create_token
        from serving.db import Database
        from serving.migrate import upgrade
        from serving.settings import load_settings

        check_role(role)
        settings = load_settings()
        settings.ensure_dirs()
        db = Database(settings.db_url)
        try:
            upgrade(db, settings.data_dir / "migrate.lock")
            token, _row = create_token(db, settings.secret_key, role, name)
        finally:
            db.dispose()
        typer.echo(token)

    app.add_typer(token_app, name="token")
