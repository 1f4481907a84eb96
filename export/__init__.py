"""Torch to ONNX export, quantization, parity check and export manifest."""
