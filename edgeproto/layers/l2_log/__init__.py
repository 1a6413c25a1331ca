"""ProtoPNet's log-similarity of squared L2 distances."""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="l2_log",
        op_type="L2LogSimilarity",
        param_names=("prototypes",),
        attrs={"epsilon": 1e-4},
        summary="d = Σ_c (z_c − p_c)² (direct form); sim = log((d + 1) / (d + ε))",
    )
)
