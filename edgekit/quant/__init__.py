"""int8 post-training quantization: calibration data, ONNX Runtime QDQ (CPU and TensorRT
flavours), OpenVINO via NNCF, the report of what was quantized, and the accuracy-budget loop that
keeps the most sensitive layers in float until the budget holds.

Modules (heavy libraries are imported inside functions):
  calibration  calibration sets from any data source, stratified sampling, checks
  ort_qdq      ONNX Runtime: pre-processing, BatchNorm folding, calibration (cached), quantize_static
  mse          MSE-optimal activation ranges (ONNX Runtime has no MSE calibration of its own)
  report       what a QDQ model quantized, which ops stayed float and why, scale ranges;
               the TensorRT explicit-quantization checks
  budget       the accuracy budget and the fallback loop, for any backend
  openvino     the OpenVINO (NNCF) backend of the budget loop
"""
