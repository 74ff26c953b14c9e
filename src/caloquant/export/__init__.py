"""Stage 4, export: generators to ONNX (dynamic batch) and OpenVINO IR, and the one home of the model-file format."""

from caloquant.export.cache import cache_dir, exported
from caloquant.export.files import PRECISION_KEY, inference_hint, read_meta, read_spec, save_ir
from caloquant.export.onnx import export_onnx, export_openvino

__all__ = ["PRECISION_KEY", "cache_dir", "export_onnx", "export_openvino", "exported", "inference_hint", "read_meta",
           "read_spec", "save_ir"]
