"""Stage 6 runtime: one Generator interface over PyTorch eager, OpenVINO and ONNX Runtime engines."""

from caloquant.runtime.engines import ENGINES, Engine, OnnxRuntimeEngine, OpenVINOEngine, TorchEngine
from caloquant.runtime.generator import PRECISIONS, Generator, cache_dir, describe, open_generator
from caloquant.runtime.throughput import Throughput, measure_throughput, peak_rss_mib

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Engine",
    "Generator",
    "OnnxRuntimeEngine",
    "OpenVINOEngine",
    "Throughput",
    "TorchEngine",
    "cache_dir",
    "describe",
    "measure_throughput",
    "open_generator",
    "peak_rss_mib",
]
