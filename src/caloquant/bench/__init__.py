"""Stage 8, bench/report: the end-to-end demo and side-by-side benchmarks."""
