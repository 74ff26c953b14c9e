"""The demo end to end on a small scale, and its one-file report opened in headless Chromium.

Chromium (Debian package ``chromium``) is installed with apt when it is missing and the test runs as root;
otherwise the browser check is skipped with the reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import pytest

pytestmark = pytest.mark.slow

#: Injected first into <head>: counts console errors, failed resources and images that did not decode, then
#: writes the verdict into the DOM that ``--dump-dom`` prints.
_PROBE = """<script>
window.__cq = {errors: []};
const _err = console.error;
console.error = function(...a) { window.__cq.errors.push('console: ' + a.join(' ')); _err.apply(console, a); };
window.addEventListener('error',
                        e => window.__cq.errors.push('error: ' + (e.message || (e.target && e.target.tagName))), true);
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const broken = imgs.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const t = document.getElementById('summary');
  const out = {images: imgs.length, broken: broken, summary_rows: t ? t.rows.length : 0,
               errors: window.__cq.errors};
  const pre = document.createElement('pre');
  pre.id = 'cq-probe';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)  # type: ignore[return-value]
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900)
        if shutil.which("chromium"):
            return shutil.which("chromium")  # type: ignore[return-value]
    pytest.skip("headless Chromium is not installed and cannot be installed here (needs root and apt-get)")


def open_in_chromium(page: Path, tmp: Path) -> tuple[dict, str]:
    """Load a copy of ``page`` with the probe; the probe's verdict and Chromium's console log."""
    probed = tmp / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1), encoding="utf-8")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp / 'profile'}", "--enable-logging=stderr", "--v=0",
           "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    found = re.search(r"<pre id=\"cq-probe\">(.*?)</pre>", proc.stdout, re.S)
    assert found, f"the probe did not run: rc {proc.returncode}, stderr {proc.stderr[-500:]}"
    console = "\n".join(ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln)
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&")), console


@pytest.fixture(scope="module")
def demo_run(gan_checkpoint, tmp_path_factory):
    from caloquant.bench.compare import BenchSettings
    from caloquant.bench.demo import DemoConfig, run_demo
    from caloquant.evaluation import EvaluationSettings

    cfg = DemoConfig(out_dir=tmp_path_factory.mktemp("demo") / "run", model=str(gan_checkpoint), n_reference=400,
                     n_validate=200, tune=EvaluationSettings(64, 200), tune_candidates=2, tune_minutes=1.0,
                     classifier=False, progress=False,
                     bench=BenchSettings(seconds=0.2, n_showers=64, n_reference=200, n_boot=20))
    return run_demo(cfg)


def test_demo_writes_every_artefact(demo_run) -> None:
    out = demo_run.out_dir
    for name in ("reference.h5", "quantize/model.xml", "quantize/recipe.json", "quantize/history.json",
                 "quantize/report.html", "validation.json", "bench.json", "bench.md", "summary.png", "report.html"):
        assert (out / name).exists(), name
    assert list(demo_run.times) == ["load", "simulate", "tune", "validate", "bench", "report"]  # MC: the card's tuning
    with h5py.File(out / "reference.h5") as f:
        assert f.attrs["gflash_tuning"] == "none"  # a checkpoint without the card field learned plain GFlash
    assert "Reference MC: 400 showers, 10:500 GeV, plain GFlash, no tuning." in demo_run.report.read_text()
    bench = json.loads((out / "bench.json").read_text())
    assert {r["name"] for r in bench["rows"]} >= {"PyTorch FP32", "OpenVINO FP32", "full INT8 (TFLite-style)",
                                                   "tuned mixed precision", "reference MC"}
    validation = json.loads((out / "validation.json").read_text())
    assert set(validation["paired"]) == {"FP32 (A) vs full INT8 (B)", "FP32 (A) vs tuned (B)"}
    assert not list(out.rglob("*.tmp"))


def test_report_renders_in_headless_chromium(demo_run, tmp_path) -> None:
    html = demo_run.report.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html  # self-contained: nothing to fetch
    probe, console = open_in_chromium(demo_run.report, tmp_path)
    assert probe["errors"] == [], probe["errors"]
    assert "Uncaught" not in console and "Failed to load" not in console, console
    assert probe["summary_rows"] >= 6  # header + the rows
    assert probe["images"] >= 8 and probe["broken"] == []
