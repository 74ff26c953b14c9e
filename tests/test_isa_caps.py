"""The precision and determinism tests (marker ``isa``) rerun under each ISA cap this CPU can honour.

oneDNN reads ``ONEDNN_MAX_CPU_ISA`` once, when it loads, so each cap runs in a fresh pytest subprocess. Both
variables are set together: oneDNN (in OpenVINO and PyTorch) honours ``ONEDNN_MAX_CPU_ISA``; OpenVINO 2026.4's
CPU plugin reacts to ``OV_CPU_MAX_ISA`` in its own kernel choice only (docs/deployment.md). A cap above what
the CPU has would silently test the uncapped machine again, so such caps are skipped with the missing flags.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from caloquant.machine import ISA_CAP_FLAGS, ISA_CAP_VARS, missing_isa_flags

pytest.importorskip("openvino")
TESTS = Path(__file__).parent


@pytest.mark.parametrize("cap", list(ISA_CAP_FLAGS))
def test_precision_and_determinism_under_isa_cap(cap: str, tmp_path: Path) -> None:
    if any(os.environ.get(v) for v in ISA_CAP_VARS):
        pytest.skip(f"already running under an ISA cap ({', '.join(ISA_CAP_VARS)})")
    missing = missing_isa_flags(cap)
    if missing:
        pytest.skip(f"this CPU lacks {', '.join(missing)} for {cap}")
    env = {**os.environ, **dict.fromkeys(ISA_CAP_VARS, cap), "CALOQUANT_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "isa and not slow", "-p", "no:cacheprovider",
                          "--basetemp", str(tmp_path / "t"), str(TESTS)], env=env, cwd=TESTS.parent,
                         capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, f"under {cap}:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
    assert " passed" in run.stdout.splitlines()[-1]
