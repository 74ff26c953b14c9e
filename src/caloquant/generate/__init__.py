"""Stage 6, generate: bin-packed multi-stream generation, streamed to resumable HDF5 files."""

from caloquant.generate.packing import Packer, Slice, pack
from caloquant.generate.resume import PartialShowerFile, partial_path
from caloquant.generate.run import GenerateResult, conditions, generate_to_file
from caloquant.generate.service import RequestBatcher

__all__ = [
    "GenerateResult",
    "Packer",
    "PartialShowerFile",
    "RequestBatcher",
    "Slice",
    "conditions",
    "generate_to_file",
    "pack",
    "partial_path",
]
