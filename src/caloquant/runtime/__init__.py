"""Stage 6, runtime: one Generator interface over PyTorch eager, OpenVINO and ONNX Runtime engines."""

from caloquant.choices import EngineName, Precision
from caloquant.export.cache import cache_dir
from caloquant.runtime.engines import ENGINES, Engine, OnnxRuntimeEngine, OpenVINOEngine, TorchEngine
from caloquant.runtime.generator import PRECISIONS, Generator, describe, open_generator
from caloquant.runtime.throughput import Throughput, measure_throughput, median_seconds, peak_rss_mib

__all__ = [
    "ENGINES",
    "PRECISIONS",
    "Precision",
    "Engine",
    "EngineName",
    "Generator",
    "OnnxRuntimeEngine",
    "OpenVINOEngine",
    "Throughput",
    "TorchEngine",
    "cache_dir",
    "describe",
    "measure_throughput",
    "median_seconds",
    "open_generator",
    "peak_rss_mib",
]
