"""Case-based reasoning autoencoder's prototype layer (Li, Liu, Chen & Rudin, AAAI 2018)."""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="cbr_ae",
        op_type="NegSquaredDistance",
        param_names=("prototypes",),
        summary=(
            "sim = −Σ_c (z_c − p_c)² (direct form): Li et al.'s squared distances between the "
            "encoding and each prototype, negated so that larger means more alike"
        ),
    )
)
