"""Diagonal-covariance Gaussian log-likelihood of each location's feature vector."""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="gaussian",
        op_type="GaussianLikelihood",
        param_names=("means", "log_var"),
        summary=(
            "v = exp(log_var); sim = −½ Σ_c [(z_c − μ_c)² / v_c + log v_c + log 2π] (direct form)"
        ),
    )
)
