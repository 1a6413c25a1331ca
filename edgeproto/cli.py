"""Command line: assembles one module per command (:mod:`edgeproto.commands`); no logic lives here."""

from __future__ import annotations

import sys

import click

from edgeproto import __version__
from edgeproto.commands.bench import bench
from edgeproto.commands.compile import compile
from edgeproto.commands.distill import distill
from edgeproto.commands.explain import explain
from edgeproto.commands.import_ import import_
from edgeproto.commands.export import export
from edgeproto.commands.serve import serve
from edgeproto.commands.train import info, train
from edgeproto.commands.validate import validate
from edgeproto.commands.verify import verify
from edgeproto.errors import EdgeprotoError


@click.group()
@click.version_option(__version__, prog_name="edgeproto")
def cli() -> None:
    """Interpretable prototype models from training to edge devices."""


for command in (train, distill, info, import_, export, compile, explain, serve, verify, validate, bench):
    cli.add_command(command)


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
