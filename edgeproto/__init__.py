"""edgeproto: interpretable prototype models from training to edge devices."""

__version__ = "0.1.0"
