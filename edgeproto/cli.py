"""Command line: each command parses its arguments and calls one stage; no logic lives here."""

from __future__ import annotations

import json
import sys

import click

from edgeproto import __version__
from edgeproto.errors import EdgeprotoError


@click.group()
@click.version_option(__version__, prog_name="edgeproto")
def cli() -> None:
    """Interpretable prototype models from training to edge devices."""


@cli.command()
@click.option("--recipe", "recipe_path", required=True, type=click.Path(dir_okay=False), help="models/<recipe>.yaml")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="checkpoint directory to write")
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

    config = run_training(load_recipe(recipe_path), out, force=force, quiet=quiet or as_json)
    if int(__import__("os").environ.get("RANK", "0")) == 0:
        _show(summarize(config, out), as_json)


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def info(checkpoint: str, as_json: bool) -> None:
    """Architecture, prototypes, classes and accuracy of a checkpoint."""
    from edgeproto.train.checkpoint import read_config
    from edgeproto.train.summary import summarize

    _show(summarize(read_config(checkpoint), checkpoint, detailed=True), as_json)


def _show(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    from edgeproto.train.summary import render

    render(summary)


def main() -> None:
    """Entry point: user mistakes print one line and exit 2; no traceback."""
    try:
        cli.main(standalone_mode=False)
    except EdgeprotoError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
