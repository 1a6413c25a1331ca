"""``edgeproto import``: bring in checkpoints trained by other code (``import protopnet FILE -o CKPT``)."""

from __future__ import annotations

import json

import click

from edgeproto.commands.options import json_option


@click.group(name="import")
def import_() -> None:
    """Convert a checkpoint saved by another project's code into an edgeproto checkpoint."""


@import_.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(), help="checkpoint directory to write")
@click.option("--arch", default=None, help="backbone (resnet18…152, vgg11…19[_bn], densenet121…201); required for "
                                            "a plain state dict, checked against a pickled model")
@click.option("--classes", "classes", type=click.Path(dir_okay=False), default=None,
              help="class names, one a line (default: the --data folder's, else class_0, class_1, …)")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help="the images it was trained on: a class folder or the CUB-200-2011 layout (export, validate)")
@click.option("--image-size", type=click.IntRange(8, 2048), default=None,
              help="input size (default: the pickle's img_size, else 224)")
@click.option("--force", is_flag=True, help="replace a checkpoint in --out")
@json_option("print the checkpoint summary as JSON")
def protopnet(file: str, out: str, arch: str | None, classes: str | None, data: str | None,
              image_size: int | None, force: bool, as_json: bool) -> None:
    """A checkpoint of the official ProtoPNet code (torch.save of model.PPNet, or its state dict).

    No pickled code runs: only tensors and the known class names are read.
    """
    from edgeproto.progress import status_line

    with status_line(not as_json, "import") as status:
        status("reading the checkpoint (no pickled code runs)")
        from edgeproto.train.protopnet_import import import_protopnet

        config = import_protopnet(file, out, arch=arch, classes=classes, data=data, image_size=image_size,
                                  force=force)
    _report(config, out, as_json)


def _report(config: dict, out: str, as_json: bool) -> None:
    """The imported checkpoint's summary, as JSON or tables."""
    from edgeproto.train.summary import summarize

    summary = {**summarize(config, out), "imported": config["imported"]}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    from edgeproto.commands.options import console
    from edgeproto.train.summary import render

    render(summary, console())
    imp = config["imported"]
    console().print(f"imported {imp['kind']} ({imp['format']} file) as {out}: {imp['arch']}, {imp['add_on']} add-on; "
                    f"{imp['prototypes_without_source']} prototypes without source patches")


@import_.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(), help="checkpoint directory to write")
@click.option("--classes", "classes", type=click.Path(dir_okay=False), default=None,
              help="class names, one a line (default: the --data folder's, else class_0, class_1, …)")
@click.option("--data", "data", type=click.Path(file_okay=False), default=None,
              help="the images it was trained on: a class folder or the CUB-200-2011 layout (export, validate)")
@click.option("--image-size", type=click.IntRange(8, 2048), default=None, help="input size (default 224)")
@click.option("--force", is_flag=True, help="replace a checkpoint in --out")
@json_option("print the checkpoint summary as JSON")
def hyperpg(file: str, out: str, classes: str | None, data: str | None, image_size: int | None, force: bool,
            as_json: bool) -> None:
    """A ProtoPNet of the public HyperPg code (Lightning .ckpt or state dict; ResNet backbones).

    Scores are log √(2π) higher than the public code's (edgeproto's normal-density constant), so each
    logit is shifted by a per-class constant, recorded in the checkpoint.
    """
    from edgeproto.train.hyperpg_import import import_hyperpg

    _report(import_hyperpg(file, out, classes=classes, data=data, image_size=image_size, force=force), out, as_json)
