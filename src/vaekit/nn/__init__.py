"""Network bodies for encoders and decoders."""

from .mlp import MLPDecoder, MLPEncoder

__all__ = ["MLPDecoder", "MLPEncoder"]
