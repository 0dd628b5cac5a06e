"""Inference backends beside `tunetext.inference` (torch): ONNX Runtime (`onnx`)."""
