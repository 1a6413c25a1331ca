"""``edgeproto distill``: ProC-KD -- train an edge-sized student from a teacher checkpoint's prototypes."""

from __future__ import annotations

import click


@click.command()
@click.option("--teacher", required=True, type=click.Path(), help="trained teacher checkpoint (edgeproto train)")
@click.option("--recipe", "recipe_path", required=True, type=click.Path(dir_okay=False),
              help="student recipe (model.arch: proc_kd), e.g. models/proc_kd_procedural.yaml")
@click.option("--out", required=True, type=click.Path(), help="student checkpoint directory to write")
@click.option("--force", is_flag=True, help="overwrite a finished checkpoint in --out")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the checkpoint summary as JSON")
def distill(teacher: str, recipe_path: str, out: str, force: bool, quiet: bool, as_json: bool) -> None:
    """Train a ProC-KD student guided by TEACHER's prototypes; resumes a killed run in the same --out.

    The student may have other classes than the teacher: prototypes are matched to its classes by
    feature similarity. The result is a normal checkpoint (export, compile, validate, explain).
    """
    from edgeproto import atomic_files
    from edgeproto.commands.train import show_summary
    from edgeproto.train import distill as run_distill
    from edgeproto.train import load_recipe
    from edgeproto.train.summary import summarize

    atomic_files.check_output(out, {"recipe": recipe_path, "teacher checkpoint": teacher})
    config = run_distill(load_recipe(recipe_path), teacher, out, force=force, quiet=quiet or as_json)
    show_summary(summarize(config, out), as_json)
