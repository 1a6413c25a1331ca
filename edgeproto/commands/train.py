"""``edgeproto train`` and ``edgeproto info``: train a recipe; describe a checkpoint."""

from __future__ import annotations

import json
import os

import click


def show_summary(summary: dict, as_json: bool) -> None:
    """A checkpoint summary as JSON or as the rich tables of :func:`edgeproto.train.summary.render`."""
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    from edgeproto.commands.options import console
    from edgeproto.train.summary import render

    render(summary, console())


@click.command()
@click.option("--recipe", "recipe_path", required=True, type=click.Path(dir_okay=False), help="models/<recipe>.yaml")
@click.option("--out", required=True, type=click.Path(), help="checkpoint directory to write")
@click.option("--force", is_flag=True, help="overwrite a finished checkpoint in --out")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the checkpoint summary as JSON")
def train(recipe_path: str, out: str, force: bool, quiet: bool, as_json: bool) -> None:
    """Train a recipe (ProtoPNet schedule); resumes a killed run in the same --out.

    Multi-process: ``torchrun --nproc-per-node N -m edgeproto.cli train ...``.
    """
    from edgeproto.train import load_recipe
    from edgeproto.train import train as run_training
    from edgeproto.train.summary import summarize

    from edgeproto import atomic_files

    atomic_files.check_output(out, {"recipe": recipe_path})
    config = run_training(load_recipe(recipe_path), out, force=force, quiet=quiet or as_json)
    if int(os.environ.get("RANK", "0")) == 0:
        show_summary(summarize(config, out), as_json)


@click.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(checkpoint: str, as_json: bool) -> None:
    """Architecture, prototypes, classes and accuracy of a checkpoint."""
    from edgeproto.train.checkpoint import read_config
    from edgeproto.train.summary import summarize

    show_summary(summarize(read_config(checkpoint), checkpoint, detailed=True), as_json)
