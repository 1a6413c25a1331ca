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


@cli.command()
@click.argument("checkpoint", type=click.Path())
@click.option("-o", "--out", required=True, type=click.Path(), help="bundle directory to write")
@click.option("--ops", type=click.Choice(["function", "inline", "plugin"]), default="function", show_default=True,
              help="custom node + function body | standard ops only | custom node for a TensorRT plugin")
@click.option("--opset", type=int, default=18, show_default=True, help="default-domain ONNX opset (17..25)")
@click.option("--golden", type=int, default=16, show_default=True, help="test images stored with reference outputs")
@click.option("--atol", type=float, default=1e-5, show_default=True, help="export check: absolute tolerance")
@click.option("--rtol", type=float, default=1e-4, show_default=True, help="export check: relative tolerance")
@click.option("--zip", "as_zip", is_flag=True, help="write one OUT.zip instead of a directory")
@click.option("--force", is_flag=True, help="replace an existing OUT")
@click.option("--json", "as_json", is_flag=True, help="print the export check as JSON")
def export(checkpoint: str, out: str, ops: str, opset: int, golden: int, atol: float, rtol: float,
           as_zip: bool, force: bool, as_json: bool) -> None:
    """Export a checkpoint to a deployment bundle, checked in ONNX Runtime against PyTorch."""
    from edgeproto.export.bundle_writer import export_bundle
    from edgeproto.export.report import render_export

    manifest = export_bundle(checkpoint, out, ops=ops, opset=opset, golden=golden, atol=atol, rtol=rtol,
                             force=force, as_zip=as_zip)
    if as_json:
        click.echo(json.dumps({"bundle": out, "model": manifest["model"], "export_check": manifest["export_check"]},
                              indent=2))
    else:
        render_export(out, manifest)


TARGET = click.option("--target", default="onnxruntime", show_default=True, help="onnxruntime | openvino")
PRECISION = click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16", "int8"]), default="fp32",
                         show_default=True)
GUARD = click.option("--guard", type=click.Choice(["prototypes", "none"]), default="prototypes", show_default=True,
                     help="keep the prototype subgraph fp32 (prototypes) or reduce everything (none)")
DEVICE = click.option("--device", default=None, help="runtime device: CPU (default), GPU, NPU, AUTO, CUDA")


@cli.command()
@click.argument("bundle", type=click.Path())
@TARGET
@PRECISION
@GUARD
@click.option("--calib", type=int, default=128, show_default=True, help="int8: calibration images (train split)")
@DEVICE
@click.option("--json", "as_json", is_flag=True, help="print the manifest entry as JSON")
def compile(bundle: str, target: str, precision: str, guard: str, calib: int, device: str | None,
            as_json: bool) -> None:
    """Compile a bundle for a runtime and precision; the artifact is recorded in the manifest."""
    from edgeproto.export.compile import compile_bundle

    entry = compile_bundle(bundle, target=target, precision=precision, guard=guard, calib=calib, device=device,
                           progress=not as_json)
    click.echo(json.dumps(entry, indent=2) if as_json else f"compiled {target} {precision} (guard={guard}): "
               f"{bundle}/{entry['model']}")


@cli.command()
@click.argument("bundle", type=click.Path())
@click.argument("image", type=click.Path())
@TARGET
@PRECISION
@GUARD
@DEVICE
@click.option("-k", "--top", "k", type=int, default=3, show_default=True, help="prototypes to show")
@click.option("-o", "--out", "out_prefix", default=None, help="write OUT.png and OUT.json (default: next to IMAGE)")
@click.option("--json", "as_json", is_flag=True, help="print the explanation as JSON")
def explain(bundle: str, image: str, target: str, precision: str, guard: str, device: str | None, k: int,
            out_prefix: str | None, as_json: bool) -> None:
    """On-device "this looks like that": prediction, top prototypes, heatmaps and source patches."""
    from edgeproto.eval.explain_cli import run_explain

    prefix = out_prefix or str(__import__("pathlib").Path(image).with_suffix("")) + ".explained"
    sys.exit(run_explain(bundle, image, target, precision, guard, device, k, prefix, as_json))


@cli.command()
@click.argument("bundle", type=click.Path())
@TARGET
@PRECISION
@GUARD
@DEVICE
@click.option("--atol", type=float, default=None, help="absolute tolerance (default by precision)")
@click.option("--rtol", type=float, default=None, help="relative tolerance (default by precision)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable report")
def verify(bundle: str, target: str, precision: str, guard: str, device: str | None, atol: float | None,
           rtol: float | None, as_json: bool) -> None:
    """On-device self-check: golden inputs on the target vs the stored PyTorch outputs (exit 1 on failure)."""
    from edgeproto.eval.explain_cli import run_verify

    sys.exit(run_verify(bundle, target, precision, guard, device, atol, rtol, as_json))


@cli.command()
@click.argument("bundle", type=click.Path())
@click.option("--target", default="onnxruntime", show_default=True,
              help="onnxruntime | openvino | tensorrt | torch | jetson")
@PRECISION
@GUARD
@click.option("--batches", default="1", show_default=True, help="comma-separated batch sizes, e.g. 1,8,32")
@click.option("--threads", type=int, default=0, show_default=True, help="0: the runtime's default")
@click.option("--min-queries", type=int, default=100, show_default=True)
@click.option("--min-seconds", type=float, default=2.0, show_default=True)
@click.option("--compare", type=click.Choice(["torch"]), default=None, help="also time the PyTorch reference")
@DEVICE
@click.option("--host", default=None, help="USER@HOST: bench on a board over SSH")
@click.option("--port", type=int, default=None, help="SSH port (default: your ssh config)")
@click.option("--identity", type=click.Path(dir_okay=False), default=None, help="SSH private key")
@click.option("--remote-python", default="python3", show_default=True, help="Python with edgeproto on the board")
@click.option("--known-hosts", type=click.Path(dir_okay=False), default=None,
              help="known_hosts file to check the board's host key against")
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
def bench(bundle, target, precision, guard, batches, threads, min_queries, min_seconds, compare, device, host,
          port, identity, remote_python, known_hosts, as_json) -> None:
    """Single-stream latency (p50/p90/p99), throughput, memory (and power on a Jetson) of a bundle."""
    from edgeproto.eval.bench_cli import run_bench

    sys.exit(run_bench(bundle, target, precision, guard, batches, threads, min_queries, min_seconds, compare,
                       device, host, port, identity, remote_python, known_hosts, as_json))


@cli.command()
@click.argument("bundle", type=click.Path())
@click.option("--target", default="onnxruntime", show_default=True, help="onnxruntime | openvino")
@PRECISION
@GUARD
@DEVICE
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="dataset config or recipe YAML (default: the bundle's recipe data)")
@click.option("--split", default="test", show_default=True, help="dataset split")
@click.option("--limit", type=int, default=None, help="first N images only")
@click.option("--thresholds", type=click.Path(dir_okay=False), default=None, help="YAML/JSON overriding thresholds")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="write report.json + report.html here")
@click.option("--sweep", is_flag=True, help="fp32, fp16/bf16, int8 with and without the guard, in one table")
@click.option("--targets", default=None, help="with --sweep: comma-separated targets (default: --target)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def validate(bundle, target, precision, guard, device, data, split, limit, thresholds, out, sweep, targets,
             as_json) -> None:
    """Accuracy, parity and explanation fidelity vs the PyTorch reference; exit 1 when a threshold fails."""
    from edgeproto.eval.validate_cli import run_validate

    sys.exit(run_validate(bundle, target=target, precision=precision, guard=guard, data=data, split=split,
                          limit=limit, thresholds=thresholds, out=out, sweep=sweep, targets=targets,
                          device=device, as_json=as_json))


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
