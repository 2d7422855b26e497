"""``preread version``: the installed versions of preread and the libraries that shape its results."""

from __future__ import annotations

import platform
from importlib import metadata

import typer

from serving.cli._common import write_json

LIBS = ("torch", "monai", "pydicom", "SimpleITK", "onnxruntime-gpu", "ray", "highdicom", "numpy")


def versions() -> dict:
    out = {"preread": metadata.version("preread"), "python": platform.python_version()}
    for name in LIBS:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def register(app: typer.Typer) -> None:
    @app.command("version")
    def version_cmd(json_path: str = typer.Option("-", "--json", help="Write JSON here ('-' = stdout).")) -> None:
        """Print preread's and its key libraries' versions."""
        write_json(versions(), json_path)
