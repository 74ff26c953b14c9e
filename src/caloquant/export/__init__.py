"""Export generators to ONNX (dynamic batch) and OpenVINO IR, keeping the ModelSpec alongside."""

from caloquant.export.onnx import PRECISION_KEY, export_onnx, export_openvino, inference_hint, read_spec

__all__ = ["PRECISION_KEY", "export_onnx", "export_openvino", "inference_hint", "read_spec"]
