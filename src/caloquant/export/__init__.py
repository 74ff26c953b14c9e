"""Export generators to ONNX (dynamic batch) and OpenVINO IR, keeping the ModelSpec alongside."""

from caloquant.export.onnx import export_onnx, export_openvino, read_spec

__all__ = ["export_onnx", "export_openvino", "read_spec"]
