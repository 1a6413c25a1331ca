"""Options shared by several commands, built from the runtime registry, and the terminal console."""

from __future__ import annotations

import click

from edgeproto.runtimes import ARTIFACT_PRECISIONS, GUARDS, RUNTIMES, device_runtimes


def target_option(choices: list[str] | None = None, default: str = "onnxruntime", help: str | None = None):
    """``--target`` as a choice of the registry's device runtimes (or ``choices``)."""
    names = choices or device_runtimes()
    text = help or "runtime: " + "; ".join(f"{n}: {RUNTIMES[n].summary}" for n in names if n in RUNTIMES)
    return click.option("--target", type=click.Choice(names), default=default, show_default=True, help=text)


precision_option = click.option(
    "--precision", type=click.Choice(ARTIFACT_PRECISIONS), default="fp32", show_default=True,
    help="auto: compile searches the fastest artifact that keeps the explanation (--min-top1 ...); "
         "the other commands use that artifact")
guard_option = click.option("--guard", type=click.Choice(GUARDS), default="prototypes", show_default=True,
                            help="keep the prototype subgraph fp32 (prototypes) or reduce everything (none)")
device_option = click.option("--device", default=None, help="runtime device: " + "; ".join(
    f"{n}: {RUNTIMES[n].devices}" for n in device_runtimes()))


def artifact_options(command):
    """``--target``, ``--precision``, ``--guard`` and ``--device``: which artifact of a bundle, where."""
    for option in (device_option, guard_option, precision_option, target_option()):
        command = option(command)
    return command


def json_option(help: str = "print the result as JSON"):
    return click.option("--json", "as_json", is_flag=True, help=help)


def console():
    """A rich console on stdout; piped output gets 160 columns so wide tables are not cut to 80."""
    from rich.console import Console

    out = Console()
    return out if out.is_terminal else Console(width=160)
