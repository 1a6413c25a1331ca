"""Tversky similarity (Doumbouya et al. 2025, "Tversky Neural Networks") over a learned feature bank.

Used as a prototype layer (per location of z) or, with ``model.head: tversky``, as the
classification head on the pooled prototype scores (B,M) seen as (B,M,1,1) against C class
prototypes (see ``edgeproto.models.prototype_net.TverskyHead``).
"""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="tversky",
        op_type="TverskySimilarity",
        param_names=("prototypes", "feature_bank", "theta", "alpha", "beta"),
        # tau: temperature of the smooth indicator [x > 0] ≈ σ(x/τ) (τ → 0: the hard rule)
        attrs={"tau": 0.1},
        summary=(
            "a = Ω·z, b = Ω·p (feature bank Ω (F,D)); s(x) = σ(x/τ) ≈ [x>0]; "
            "f(A∩B) = Σ_f a·s(a)·b·s(b), f(A−B) = Σ_f a·s(a)·s(−b), f(B−A) = Σ_f b·s(b)·s(−a); "
            "sim = θ·f(A∩B) − α·f(A−B) − β·f(B−A) (θ, α, β per prototype)"
        ),
    )
)
