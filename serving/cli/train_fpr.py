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
        l2: float = typer.Option(1.0, "--l2", help="L2 penalty of the logistic regression."),
        cache: str = typer.Option(".cache/fpr", "--cache", help="Keep generated studies here as .npz."),
        write: bool = typer.Option(True, "--write/--no-write", help="Write the result into the model card."),
        json_path: str = typer.Option("-", "--json", help="Write the report JSON here ('-' = stdout)."),
    ) -> None:
        """Run the detector on training studies, fit the candidate scorer, write it to the card."""
        from pipelines.errors import ConfigError
        from training.fpr import check_seeds, collect, fit, write_to_card

        import numpy as np

        groups = []
        for part in seeds.split(","):
            bits = part.strip().split(":")
            try:
                a, b = int(bits[-2]), int(bits[-1])
                if len(bits) not in (2, 3) or b <= a:
                    raise ValueError
            except (ValueError, IndexError) as err:
                raise ConfigError(f"--seeds must be [PRESET:]START:STOP groups (integers, START < STOP), "
                                  f"got {part!r}") from err
            groups.append((bits[0] if len(bits) == 3 else preset, list(range(a, b))))
        for _, group in groups:
            check_seeds(group)
        name = model
        if name is None:
            from models.registry import default_model_name

            name = default_model_name()
        rows, ys, owners = [], [], []
        for pre, group in groups:
            r, y, o = collect(name, group, preset=pre, cache_dir=cache)
            rows += r; ys.append(y); owners.append(o)
        y, owner = np.concatenate(ys), np.concatenate(owners)
        reducer, report = fit(rows, y, owner, l2=l2, keep_sensitivity=keep)
        if write:
            report["card"] = str(write_to_card(name, reducer))
        report["min_score"] = reducer.min_score
        write_json(report, json_path)
