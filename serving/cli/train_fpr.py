"""``preread train-fpr``: fit a model card's false-positive reduction on synthetic training studies."""

from __future__ import annotations

import typer

from serving.cli._common import write_json


def register(app: typer.Typer) -> None:
    @app.command("train-fpr")
    def train_fpr_cmd(
        model: str = typer.Option(None, "--model", help="Model card name or path (default: the default card)."),
        seeds: str = typer.Option("3000:3030", "--seeds", help="Seeds [PRESET:]START:STOP, comma-separated groups "
                                  "(e.g. 3000:3030,full:3100:3104), neither the network's training seeds nor "
                                  "evaluation seeds."),
        preset: str = typer.Option("fast", "--preset", help="Synthetic preset of groups that name none."),
        keep: float = typer.Option(0.98, "--keep-sensitivity", help="Fraction of true candidates min_score keeps."),
        kind: str = typer.Option("trees", "--kind", help="Scorer: trees (gradient-boosted trees, scikit-learn, written "
                                 "beside the weights with their sha256; the default card's) or logistic "
                                 "(coefficients in the card)."),
        l2: float = typer.Option(1.0, "--l2", help="L2 penalty of the logistic regression."),
        cache: str = typer.Option(".cache/fpr", "--cache", help="Keep generated studies here as .npz."),
        write: bool = typer.Option(True, "--write/--no-write", help="Write the result into the model card."),
        json_path: str = typer.Option("-", "--json", help="Write the report JSON here ('-' = stdout)."),
    ) -> None:
        """Run the detector on training studies, fit the candidate scorer, write it to the card."""
        from training.fpr import collect_groups, fit, parse_seed_groups, write_to_card

        from pipelines.errors import ConfigError

        if kind not in ("logistic", "trees"):
            raise ConfigError(f"--kind must be logistic or trees, got {kind!r}")
        groups = parse_seed_groups(seeds, preset)
        name = model
        if name is None:
            from models.registry import default_model_name

            name = default_model_name()
        rows, y, owner = collect_groups(name, groups, cache_dir=cache)
        reducer, report = fit(rows, y, owner, l2=l2, keep_sensitivity=keep, kind=kind)
        if write:
            report["card"] = str(write_to_card(name, reducer))
        report["min_score"] = reducer["min_score"] if isinstance(reducer, dict) else reducer.min_score
        write_json(report, json_path)
