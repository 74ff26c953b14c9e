"""The words users choose between (engine, precision, recipe fallback), as string enums: each member is its word,
so it compares, hashes and serialises to JSON as the bare string did; ``parse`` turns user input into a member."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from caloquant.errors import InputError

C = TypeVar("C", bound="Choice")


class Choice(str, Enum):
    """A string enum whose members print as their word (``enum.StrEnum`` is Python 3.11+)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @classmethod
    def words(cls) -> tuple[str, ...]:
        """Every member's word, in definition order."""
        return tuple(str(m.value) for m in cls)

    @classmethod
    def parse(cls: type[C], value: str | C, what: str) -> C:
        """The member named by ``value``; one-line InputError listing the choices for ``what`` otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise InputError(f"unknown {what} {str(value)!r}; choose one of {', '.join(cls.words())}") from None


class EngineName(Choice):
    """Inference engine of a generator."""

    OPENVINO = "openvino"
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"


class Precision(Choice):
    """Precision word of a generator or of one layer of a recipe."""

    FP32 = "fp32"
    BF16 = "bf16"
    INT8 = "int8"


class Fallback(Choice):
    """Precision of every non-INT8 op of a quantized model (BF16 where the CPU runs it natively)."""

    FP32 = "fp32"
    BF16 = "bf16"
