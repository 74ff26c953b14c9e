"""Faults of issue 16 (Deliver 3) for ``train`` and ``quantize``: locks, the overwrite rule, SIGINT/SIGTERM
mid-run, SIGKILL mid-run and a second writer. After each, the output is complete and valid, or as it was
before, and a rerun (``train --resume``) completes it exactly as an uninterrupted run would.

The fast tests stub the quantize work (the lock, staging and publishing are what is tested); the end-to-end
ones run the CLI in a subprocess that is killed mid-run, and are marked slow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from caloquant._atomic import OutputLock
from caloquant.data import write_showers
from caloquant.errors import InputError
from caloquant.quantize import AccuracyNotReachedError
from caloquant.simulate import simulate
from helpers import RECIPE_FIXTURE, SRC, leftovers, run_cli

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def showers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("faults") / "mc.h5"
    write_showers(path, simulate(80, "10:100", seed=4))
    return path


def _train_args(data: Path, out: Path, steps: int, *extra: object) -> list[object]:
    return ["train", data, "-o", out, "--max-steps", steps, "--batch", 2, "--chunk", 20, "--threads", 1, "--seed", 3,
            "--precision", "fp32", "--eval-showers", 10, "--checkpoint-every", 1, "--device", "cpu", "-q", *extra]


def _deliver(signum: int) -> None:
    """The signal as the interpreter delivers it: the installed handler runs in the main thread."""
    signal.getsignal(signum)(signum, None)  # type: ignore[operator]


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / "checkpoint-last.pt", weights_only=True)


def _assert_same_training(a: Path, b: Path) -> None:
    """Two run folders hold the same step and bit-identical models and optimizer states."""
    sa, sb = _state(a), _state(b)
    assert sa["state"]["step"] == sb["state"]["step"]
    for key in ("generator", "discriminator"):
        assert all(torch.equal(sa[key][k], sb[key][k]) for k in sa[key]), key
    for key in ("opt_g", "opt_d"):
        for pa, pb in zip(sa[key]["state"].values(), sb[key]["state"].values()):
            assert all(torch.equal(pa[k], pb[k]) if torch.is_tensor(pa[k]) else pa[k] == pb[k] for k in pa), key


# -- train ----------------------------------------------------------------------------------------------------


def test_train_run_folder_is_locked_with_owner(showers, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    with OutputLock(run):
        for extra in ((), ("--resume",)):
            code, err = run_cli(capsys, *_train_args(showers, run, 2, *extra))
            assert code == 2 and f"PID {os.getpid()} on {socket.gethostname()}" in err and "another run" in err
    assert not run.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("signum", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM])
def test_train_signal_checkpoints_and_resume_is_exact(showers, tmp_path, capsys, monkeypatch, signum) -> None:
    from caloquant.train.loop import Trainer

    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert run_cli(capsys, *_train_args(showers, straight, 3))[0] == 0
    step = Trainer.train_step

    def interrupted_at_1(self: Trainer, batch: Any, i: int) -> Any:
        if i == 1:
            _deliver(signum)  # between checkpoints: the stop is honoured after this step, with a checkpoint
        return step(self, batch, i)

    monkeypatch.setattr(Trainer, "train_step", interrupted_at_1)
    code, err = run_cli(capsys, *_train_args(showers, cut, 3, "--checkpoint-every", 100))
    assert code == 128 + signum and "at step 2" in err and "--resume" in err
    monkeypatch.undo()
    assert _state(cut)["state"]["step"] == 2 and leftovers(tmp_path) == []
    assert run_cli(capsys, *_train_args(showers, cut, 3, "--checkpoint-every", 100, "--resume"))[0] == 0
    _assert_same_training(straight, cut)


def _start(args: list[object], cwd: Path) -> subprocess.Popen[bytes]:
    """The CLI in a child process; its stderr goes to ``cwd/child.err``."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with (cwd / "child.err").open("wb") as err:
        return subprocess.Popen([sys.executable, "-m", "caloquant.cli", *map(str, args)], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)


def _wait_for(done: Callable[[], bool], proc: subprocess.Popen[bytes], what: str) -> None:
    """Poll until ``done()`` (the child must still be running)."""
    deadline = time.monotonic() + 300
    while not done():
        assert proc.poll() is None, f"child exited {proc.returncode} before {what}: {proc.args}"
        assert time.monotonic() < deadline, f"no {what} after 300 s"
        time.sleep(0.05)


def _wait_until_unlocked(path: Path) -> None:
    """Wait until no process holds ``path``'s lock: a helper that the killed run forked may hold it a moment longer."""
    deadline = time.monotonic() + 60
    while True:
        try:
            OutputLock(path).release()
            return
        except InputError:
            assert time.monotonic() < deadline, f"{path} still locked 60 s after its owner was killed"
            time.sleep(0.1)


@pytest.mark.slow
def test_train_sigkill_mid_run_second_writer_refused_resume_is_exact(showers, tmp_path, capsys) -> None:
    run, straight = tmp_path / "run", tmp_path / "straight"
    proc = _start(_train_args(showers, run, 6), tmp_path)
    try:
        _wait_for(lambda: (run / "checkpoint-last.pt").exists(), proc, "a first checkpoint")
        for extra in ((), ("--resume",)):  # a second writer, while the first runs
            code, err = run_cli(capsys, *_train_args(showers, run, 6, *extra))
            assert code == 2 and f"PID {proc.pid} on {socket.gethostname()}" in err
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    _wait_until_unlocked(run)
    assert run_cli(capsys, *_train_args(showers, run, 6, "--resume"))[0] == 0
    assert run_cli(capsys, *_train_args(showers, straight, 6))[0] == 0
    _assert_same_training(straight, run)


# -- quantize -------------------------------------------------------------------------------------------------


def _fake_quantize(tag: str, *, rejected: bool = False, signum: int | None = None) -> Callable[..., Any]:
    """Stands in for the tuning: writes the outputs of a run named ``tag`` into the folder it is given."""
    from caloquant.quantize.openvino_backend import Calibration
    from caloquant.quantize.recipe import Recipe
    from caloquant.quantize.workflow import QuantizeResult

    def run(model: object, out: Path, **kwargs: Any) -> QuantizeResult:
        names = ("model.rejected.xml", "recipe.rejected.json") if rejected else ("model.xml", "recipe.json")
        for name in (*names, "history.json"):
            (out / name).write_text(tag)
        if signum is not None:
            _deliver(signum)
        if rejected:
            raise AccuracyNotReachedError("no candidate passed", None)
        return QuantizeResult(Recipe(tag, "0" * 64, {}, Calibration(), {}))

    return run


def _quantize(capsys: pytest.CaptureFixture[str], out: Path, *extra: object) -> tuple[int, str]:
    return run_cli(capsys, "quantize", "--model", "ecal25", "--recipe", "r.json", "-q", "-o", out, *extra)


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_quantize_lock_overwrite_rule_and_staged_outputs(tmp_path, capsys, monkeypatch) -> None:
    from caloquant.quantize import workflow

    q = tmp_path / "q"
    monkeypatch.setattr(workflow, "_quantize", _fake_quantize("first"))
    with OutputLock(q):
        code, err = _quantize(capsys, q)
        assert code == 2 and f"PID {os.getpid()} on {socket.gethostname()}" in err
    assert not q.exists()
    (tmp_path / ".q.99999.tmp").mkdir()  # the staging folder of a run that was killed
    assert _quantize(capsys, q)[0] == 0
    assert _contents(q) == {"history.json": b"first", "model.xml": b"first", "recipe.json": b"first"}
    assert leftovers(tmp_path) == []
    (q / "notes.txt").write_text("mine")

    monkeypatch.setattr(workflow, "_quantize", _fake_quantize("second"))
    code, err = _quantize(capsys, q)
    assert code == 2 and "pass --overwrite" in err and "model.xml" in err
    for signum in (signal.SIGINT, signal.SIGTERM):  # mid-run: the folder stays as it was
        monkeypatch.setattr(workflow, "_quantize", _fake_quantize("second", signum=signum))
        assert _quantize(capsys, q, "--overwrite")[0] == 128 + signum
        assert _contents(q)["model.xml"] == b"first" and leftovers(tmp_path) == []

    monkeypatch.setattr(workflow, "_quantize", _fake_quantize("rejected", rejected=True))
    assert _quantize(capsys, q, "--overwrite")[0] == 2
    assert _contents(q) == {"history.json": b"rejected", "model.rejected.xml": b"rejected", "notes.txt": b"mine",
                            "recipe.rejected.json": b"rejected"}  # nothing of the earlier, accepted run is left
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_quantize_sigkill_mid_run_second_writer_refused_rerun_completes(tmp_path, capsys) -> None:
    pytest.importorskip("openvino")
    from caloquant.machine import isa_identity
    from caloquant.models import model_card

    recipe = json.loads(RECIPE_FIXTURE.read_text())
    recipe["source_sha256"] = model_card("ecal25")["sha256"]  # its layer map, replayed on today's weights
    recipe["calibration_data"] = {**recipe["calibration_data"], "n": 32, "batch": 16}
    recipe["machine"] = isa_identity()  # replayed on the ISA it names: no physics re-check (fast)
    (tmp_path / "r.json").write_text(json.dumps(recipe))
    q, straight = tmp_path / "q", tmp_path / "straight"
    proc = _start(["quantize", "--model", "ecal25", "--recipe", "r.json", "-q", "-o", q], tmp_path)
    try:
        _wait_for(lambda: any(p.name.startswith(".q.") and p.is_dir() for p in tmp_path.iterdir()), proc,
                  "a staging folder")
        code, err = run_cli(capsys, "quantize", "--model", "ecal25", "--recipe", tmp_path / "r.json", "-o", q)
        assert code == 2 and f"PID {proc.pid} on {socket.gethostname()}" in err
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert not q.exists()  # never a half-written output folder
    _wait_until_unlocked(q)
    for out in (q, straight):
        code, err = run_cli(capsys, "quantize", "--model", "ecal25", "--recipe", tmp_path / "r.json", "-o", out)
        assert code == 0, err
    a, b = _contents(q), _contents(straight)
    assert a.keys() == b.keys() and a.pop("model.xml") and b.pop("model.xml")  # XML node names are per-process
    assert a == b  # weights (model.bin), spec and recipe
    assert leftovers(tmp_path) == []
