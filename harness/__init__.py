"""ptq-harness: a reproducible benchmark harness for post-training quantization."""

__version__ = "0.1.0"
