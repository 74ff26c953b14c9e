"""Stage 8, bench/report: the end-to-end demo and side-by-side benchmarks."""

__all__: list[str] = []  # the stages live in the submodules (compare, demo, machine, ...)
