"""Scoring with ONNX Runtime: no torch, no transformers."""
