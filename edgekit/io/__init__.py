"""Files: atomic writes, hashing, manifests, safe model and ONNX loading."""
