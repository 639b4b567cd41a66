"""ONNX operator families that several parts read a graph for (the quantization report, the
TensorRT QDQ check): one definition, below both."""

COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RECURRENT_OPS = ("LSTM", "GRU", "RNN")
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
