"""``preread export``: write the model as ONNX (dynamic spatial axes) or TorchScript."""

from __future__ import annotations

from pathlib import Path

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        fmt: str = typer.Option("onnx", "--format", help="onnx | torchscript | bundle"),
        model: str = typer.Option(None, "--model", help="Model card name (default: the card marked default)."),
        out: str = typer.Option(None, "--out", help="Output file (default: the card's onnx/torchscript file)."),
        update_card: bool = typer.Option(False, "--update-card", help="Record the file's sha256 in the model card."),
        json_path: str = typer.Option("-", "--json", help="Write {path, sha256} here ('-' = stdout)."),
    ) -> None:
        """Export the model card's network with its verified weights; prints the file and its sha256."""
        from models.backends import load_network
        from models.errors import ModelError as ModelsError
        from models.export import FORMATS, export_onnx, export_torchscript
        from models.registry import REPO_ROOT, load_spec
        from pipelines.errors import ConfigError, ModelError

        if fmt not in FORMATS + ("bundle",):
            raise ConfigError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS + ('bundle',))}")
        try:
            spec = load_spec(model)
            if fmt == "bundle":
                from models.bundle import write_bundle

                folder = Path(out) if out else REPO_ROOT / (spec.bundle or f"models/bundles/{spec.name}")
                write_bundle(spec, folder)
                write_json({"model": spec.name, "format": fmt, "path": str(folder)}, json_path)
                return
            net = load_network(spec)
            target = spec.onnx if fmt == "onnx" else spec.torchscript
            if out:
                path = Path(out)
            elif target is not None:
                path = target.path()
            else:
                path = REPO_ROOT / "models" / "weights" / f"{spec.name}.{'onnx' if fmt == 'onnx' else 'ts'}"
            size = tuple(spec.input.patch_size)
            digest = export_onnx(net, path, example_size=size) if fmt == "onnx" else export_torchscript(net, path, example_size=size)
        except ModelsError as err:
            raise ModelError(str(err)) from err
        if update_card:
            import yaml

            from models.registry import models_dir

            card_path = models_dir() / f"{spec.name}.yaml"
            card = yaml.safe_load(card_path.read_text())
            key = "onnx" if fmt == "onnx" else "torchscript"
            rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
            card[key] = {"file": str(rel), "sha256": digest}
            card_path.write_text(yaml.safe_dump(card, sort_keys=False, width=110))
        write_json({"model": spec.name, "format": fmt, "path": str(path), "sha256": digest}, json_path)
