"""The machine description that heads every benchmark table."""

from __future__ import annotations

from caloquant.machine import RELEVANT_FLAGS, describe_machine, describe_markdown


def test_describe_lists_isa_and_versions() -> None:
    d = describe_machine()
    assert set(d["isa"]) == set(RELEVANT_FLAGS)  # type: ignore[arg-type]
    assert d["versions"]["numpy"]  # type: ignore[index]
    assert int(d["cores"]) >= 1  # type: ignore[call-overload]
    assert "missing:" in describe_markdown()
