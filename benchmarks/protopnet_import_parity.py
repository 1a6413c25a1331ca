"""How close an imported ProtoPNet is to the official forward pass, per backbone family.

Builds the official network (re-written in ``tests/test_import_protopnet.py`` from cfchen-duke/ProtoPNet)
at 64 px, saves it as the official ``save.py`` does, imports it, and prints the largest relative
difference of logits and min-distances (the test asserts ≤ 1e-6 + 1e-5·|ref|).

    python benchmarks/protopnet_import_parity.py
"""

from __future__ import annotations

import sys
import tempfile
import types
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import test_import_protopnet as official  # noqa: E402

from edgeproto.layers.l2_log.torch_op import squared_distances  # noqa: E402
from edgeproto.train.checkpoint import load_checkpoint  # noqa: E402
from edgeproto.train.protopnet_import import import_protopnet  # noqa: E402


def main() -> None:
    for name, classes in official.OFFICIAL.items():  # the official module names, as pickle records them
        module = types.ModuleType(name)
        for cls in classes:
            cls.__module__ = name
            setattr(module, cls.__name__, cls)
        sys.modules[name] = module
    warnings.simplefilter("ignore")
    for arch, add_on in [("resnet18", "regular"), ("resnet50", "bottleneck"), ("vgg11_bn", "bottleneck"),
                         ("densenet121", "regular")]:
        model = official.official_model(arch, add_on)
        work = Path(tempfile.mkdtemp())
        torch.save(model, work / "model.pth")
        import_protopnet(work / "model.pth", work / "ckpt")
        ours, _ = load_checkpoint(work / "ckpt")
        x = torch.randn(2, 3, official.SIZE, official.SIZE, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref_logits, ref_min = model(x)
            out = ours(x)
            our_min = squared_distances(ours.features(x), ours.prototype_layer.prototypes).amin(dim=(2, 3))
        rel = lambda a, r: float(((a - r).abs() / r.abs()).max())  # noqa: E731
        print(f"{arch:12s} {add_on:10s} logits max rel {rel(out['logits'], ref_logits):.2e}  "
              f"min-distances max rel {rel(our_min, ref_min):.2e}")


if __name__ == "__main__":
    main()
