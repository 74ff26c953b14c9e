"""Benchmark: peak memory and disk use of streamed simulation, generation and validation as N grows.

Each stage is one ``caloquant`` child process; its peak RSS is the kernel's high-water mark of that child
(``os.wait4`` rusage), its disk use the size of what it wrote, its temporary disk the most that its unlinked
temporary files held at once (sampled twice a second from /proc). Reference MC: ``simulate`` two independent
samples (seeds 1 and 2) and ``validate`` one against the other; generator: ``generate --engine torch`` with the
shipped ecal25 and ``validate`` it against the seed-1 MC sample of the same size (when there is one). Memory
should stay flat in N: every stage streams chunks of showers through memory (``validate`` keeps large samples'
features in temporary files, in TMPDIR: the temporary column, not the work folder's).

    PYTHONPATH=src .venv/bin/python bench/resource_bounds.py --n 10000 100000 --generate-n 1000 10000 \\
        [--workdir /tmp/caloquant_bounds] [--json bounds.json] [--keep] [--reuse]

``--keep --reuse`` keeps the MC files and measures only ``validate`` on the files a previous run left (the
``validate`` bound at 30k, 100k and 300k: ``--n 30000 100000 300000 --generate-n --keep --reuse``; a file
that is not there yet is simulated and measured first).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024 * 1024


def deleted_file_bytes(pid: int) -> int:
    """Bytes on disk of the deleted files a process holds open (its unlinked temporary files; Linux /proc)."""
    total = 0
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(" (deleted)"):
                total += os.stat(f"/proc/{pid}/fd/{fd}").st_blocks * 512
        except OSError:
            continue
    return total


def run_stage(args: list[str], log: Path) -> tuple[float, float, float]:
    """Run ``caloquant ARGS`` as a child process; its wall seconds, peak RSS in MiB and peak temporary disk in MiB
    (unlinked files it held open, sampled twice a second), failing on a non-zero exit."""
    t0 = time.perf_counter()
    peak_tmp = [0]
    with log.open("ab") as err:
        child = subprocess.Popen([sys.executable, "-m", "caloquant.cli", *args], stdout=subprocess.DEVNULL,
                                 stderr=err)
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.5):
                peak_tmp[0] = max(peak_tmp[0], deleted_file_bytes(child.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(child.pid, 0)
        done.set()
        sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"caloquant {' '.join(args)} exited {child.returncode}; see {log}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024, peak_tmp[0] / MIB  # ru_maxrss is in KiB on Linux


def du_mib(folder: Path) -> float:
    """Bytes on disk under ``folder``, in MiB."""
    return sum(p.stat().st_blocks * 512 for p in folder.rglob("*") if p.is_file()) / MIB


def measure(stage: str, n: int, args: list[str], output: Path | None, workdir: Path,
            rows: list[dict[str, Any]], json_out: Path | None) -> None:
    """Append one stage's row (wall time, peak RSS, size of its output and of the work folder); save the rows."""
    wall, rss, tmp = run_stage(args, workdir / "stderr.log")
    row = {"stage": stage, "n": n, "wall_s": round(wall, 1), "peak_rss_mib": round(rss, 1),
           "output_mib": round(output.stat().st_size / MIB, 1) if output is not None else None,
           "workdir_mib": round(du_mib(workdir), 1), "peak_tmp_mib": round(tmp, 1)}
    print(json.dumps(row), flush=True)
    rows.append(row)
    if json_out is not None:
        json_out.write_text(json.dumps(rows, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="*", default=[10_000, 100_000], help="MC sample sizes")
    ap.add_argument("--generate-n", type=int, nargs="*", default=[10_000], help="generated sample sizes")
    ap.add_argument("--energy", default="10:500")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/caloquant_bounds"))
    ap.add_argument("--json", type=Path, default=None, help="write the rows here as well")
    ap.add_argument("--keep", action="store_true", help="keep the shower files (default: delete after each N)")
    ap.add_argument("--reuse", action="store_true", help="use MC files already in the work folder instead of "
                    "simulating them again (no simulate row for those)")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    w, rows = args.workdir, []
    sizes = sorted(set(args.n) | set(args.generate_n))
    for n in sizes:
        mc = [w / f"mc_{n}_s{seed}.h5" for seed in (1, 2)]
        gen = w / f"gen_{n}.h5"
        if n in args.n:
            for seed, path in zip((1, 2), mc):
                if args.reuse and path.exists():
                    print(f"reusing {path}", flush=True)
                    continue
                measure("simulate", n, ["simulate", "-o", str(path), "--n", str(n), "--energy", args.energy,
                                        "--seed", str(seed), "-q", "--overwrite"], path, w, rows, args.json)
            measure("validate MC vs MC", n, ["validate", str(mc[0]), str(mc[1]), "--no-classifier", "-q", "--json",
                                             str(w / f"val_mc_{n}.json")], None, w, rows, args.json)
        if n in args.generate_n:
            measure("generate torch", n, ["generate", "--model", "ecal25", "--engine", "torch", "--n", str(n),
                                          "--energy", args.energy, "-q", "-o", str(gen), "--overwrite"],
                    gen, w, rows, args.json)
            if mc[0].exists():
                measure("validate generated vs MC", n, [
                    "validate", str(mc[0]), str(gen), "--no-classifier", "-q", "--json",
                    str(w / f"val_gen_{n}.json")], None, w, rows, args.json)
        if not args.keep:
            for p in (*mc, gen):
                p.unlink(missing_ok=True)
    print("| stage | N | wall s | peak RSS MiB | output MiB | work folder MiB | peak temporary MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['stage']} | {r['n']:,} | {r['wall_s']} | {r['peak_rss_mib']} | {r['output_mib'] or ''} | "
              f"{r['workdir_mib']} | {r['peak_tmp_mib']} |")


if __name__ == "__main__":
    main()
