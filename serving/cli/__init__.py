"""The ``preread`` command line.

Each subcommand lives in its own module in this package and exposes ``register(app: typer.Typer)``;
modules are discovered at start-up, so stages can add commands without touching this file.

Exit codes: 0 success, 2 bad input (any :class:`~pipelines.errors.PrereadError`, or a usage error),
1 internal failure. Errors are printed as one line on stderr, never a traceback (set
``PREREAD_DEBUG=1`` to see one).
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

import typer

from pipelines.errors import PrereadError

log = logging.getLogger("preread")

app = typer.Typer(
    name="preread",
    help="Pre-read assistant for chest CT: nodules found and measured by AI, checked against the report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _register_subcommands() -> None:
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{mod.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_subcommands()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code: PrereadError → one line and 2; anything else → one line and 1."""
    try:
        app(args=argv, prog_name="preread", standalone_mode=True)  # usage errors: click prints them, exit 2
    except SystemExit as ex:
        code = ex.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except PrereadError as err:
        if os.environ.get("PREREAD_DEBUG"):
            log.exception("bad input")
        typer.echo(f"error: {err.one_line()}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("error: interrupted", err=True)
        return 130
    except Exception as err:  # noqa: BLE001 - last resort: one line, exit 1
        if os.environ.get("PREREAD_DEBUG"):
            log.exception("internal failure")
        msg = " ".join(str(err).split()) or type(err).__name__
        typer.echo(f"error: internal failure ({type(err).__name__}): {msg}", err=True)
        return 1
    return 0


def run() -> None:
    """Console-script entry point (``preread``)."""
    sys.exit(main())
