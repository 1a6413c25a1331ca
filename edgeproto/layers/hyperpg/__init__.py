"""HyperPg: a Gaussian over the cosine similarity on the hypersphere (log-density)."""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="hyperpg",
        op_type="HyperPgLikelihood",
        param_names=("prototypes", "mu", "log_sigma"),
        summary=(
            "cos = ⟨ẑ, p̂⟩ (norms clamped at 1e-6), σ = exp(log_sigma); "
            "sim = −(cos − μ)² / (2σ²) − log(√(2π)·σ)"
        ),
    )
)
