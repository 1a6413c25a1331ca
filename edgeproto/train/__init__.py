"""The bundled trainer: recipes in, checkpoints out."""

from edgeproto.train.pruning import prune
from edgeproto.train.recipe import load_recipe, validate_recipe
from edgeproto.train.run import distill, train

__all__ = ["distill", "load_recipe", "prune", "train", "validate_recipe"]
