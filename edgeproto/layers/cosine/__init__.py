"""Cosine similarity between each location's feature vector and each prototype."""

from edgeproto.layers.family import PrototypeFamily, register_family

NORM_EPS = 1e-6  # norm clamp x / max(‖x‖, NORM_EPS), shared by torch and ONNX (cosine, hyperpg)

FAMILY = register_family(
    PrototypeFamily(
        name="cosine",
        op_type="CosineSimilarity",
        param_names=("prototypes",),
        summary="sim = ⟨ẑ, p̂⟩, x̂ = x / max(‖x‖, 1e-6) (z over channels, p over D)",
    )
)
