"""ProtoQuant-style codebook: each latent patch is softly assigned to learned codes (prototypes)."""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="codebook",
        op_type="CodebookSimilarity",
        param_names=("prototypes",),
        attrs={"tau": 0.1},
        summary=(
            "cos_m = ⟨ẑ, ĉ_m⟩ (norms clamped at 1e-6); sim = softmax over the M codes of cos/τ "
            "(soft assignment of each location to the codebook)"
        ),
    )
)
