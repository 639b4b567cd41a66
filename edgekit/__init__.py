"""edgekit: compress, quantize, export and validate PyTorch image models for edge devices."""

__version__ = "0.1.0"
