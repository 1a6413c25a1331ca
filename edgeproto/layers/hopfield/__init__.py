"""Modern Hopfield pooling: learned state patterns (prototypes) retrieve over the latent patches."""

from edgeproto.layers.family import PrototypeFamily, register_family

FAMILY = register_family(
    PrototypeFamily(
        name="hopfield",
        op_type="HopfieldRetrieval",
        param_names=("prototypes",),
        # beta: inverse temperature, 0 -> 1/sqrt(D); steps: fixed number of update steps (an
        # integer count carried as a float attribute, like every edgeproto attribute)
        attrs={"beta": 0.0, "steps": 1.0},
        summary=(
            "keys k_n = z at the N = H·W locations, β = beta or 1/√D if beta = 0; q₀ = p; "
            "q_{t+1} = Σ_n softmax_n(β⟨q_t, k_n⟩)·k_n for t < steps − 1; "
            "sim = softmax_n(β⟨q_{steps−1}, k_n⟩) (attention over locations)"
        ),
    )
)
