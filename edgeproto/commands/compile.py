"""``edgeproto compile``: a bundle → a runtime artifact at a precision, recorded in the manifest."""

from __future__ import annotations

import json

import click

from edgeproto.commands.options import artifact_options, json_option


@click.command()
@click.argument("bundle", type=click.Path())
@artifact_options
@click.option("--calib", type=int, default=128, show_default=True, help="int8: calibration images (train split)")
@click.option("--data-root", default=None, type=click.Path(file_okay=False),
              help="int8: the image folder of the recipe's data, when it is no longer where the manifest says")
@click.option("--force", is_flag=True, help="rebuild an artifact the bundle already holds")
@click.option("--ops", type=click.Choice(["inline", "plugin"]), default="inline", show_default=True,
              help="tensorrt: the prototype ops as standard ops (inline) or as edgeproto's TensorRT plugins")
@json_option("print the manifest entry as JSON")
def compile(bundle: str, target: str, precision: str, guard: str, calib: int, data_root: str | None,
            device: str | None, force: bool, ops: str, as_json: bool) -> None:
    """Compile a bundle for a runtime and precision; the artifact is recorded in the manifest."""
    from edgeproto.runtimes.compile import compile_bundle

    entry = compile_bundle(bundle, target=target, precision=precision, guard=guard, calib=calib, device=device,
                           progress=not as_json, force=force, data_root=data_root, ops=ops)
    if as_json:
        click.echo(json.dumps(entry, indent=2))
        return
    check = entry["check"]
    note = entry.get("calibration", {}).get("note")
    if note:
        click.echo(f"note: {note}")
    form = f", ops={entry['ops']}" if "ops" in entry else ""
    click.echo(f"compiled {target} {precision} (guard={guard}{form}): {bundle}/{entry['model']}")
    click.echo(f"golden check on {check['images']} images: top-1 prototype agreement "
               f"{check['top1_prototype_agreement']:.3f}, class agreement {check['class_agreement']:.3f}, "
               f"finite {'yes' if check['finite'] else 'NO'}; "
               + (f"within atol {check['atol']:g} + rtol {check['rtol']:g}" if check.get("elementwise_gated", True)
                  else f"(int8: top-1 prototype ≥ {check['min_agreement']:g}, class ≥ "
                       f"{check['min_class_agreement']:g}, as validate judges int8)")
               + f": {'PASS' if check['passed'] else 'FAIL (edgeproto verify will fail too)'}")
