"""nash: narrow-encoder, shallow-decoder compression for encoder-decoder language models."""

__version__ = "0.1.0"
