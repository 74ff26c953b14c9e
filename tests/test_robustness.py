"""Regression tests of issue 16: full disks, concurrent runs, tampered artifacts, bad input, signals.

Each test names the defect number of the issue it guards. Disk-full faults are injected twice over: as a
write failure inside HDF5's file driver (in process), and as a real one (RLIMIT_FSIZE in a subprocess).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloquant._atomic import OutputLock, RollbackFile
from caloquant.cli import main
from caloquant.data import read_showers, write_showers
from caloquant.errors import InputError, Interrupted, ModelError
from caloquant.simulate import simulate
from helpers import SRC, leftovers, run_cli


def fail_writes_after(monkeypatch: pytest.MonkeyPatch, budget: int) -> None:
    """Make every HDF5 write through RollbackFile fail with ENOSPC once ``budget`` bytes were written."""
    write = RollbackFile.write
    used = [0]

    def full(self: RollbackFile, data: object) -> int:
        n = len(memoryview(data).cast("B"))  # type: ignore[arg-type]
        if not self._discard and used[0] + n > budget:
            self.error = OSError(errno.ENOSPC, "No space left on device")
            raise self.error
        used[0] += 0 if self._discard else n
        return write(self, data)

    monkeypatch.setattr(RollbackFile, "write", full)


def with_fsize_limit(limit: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a subprocess whose files cannot grow beyond ``limit`` bytes (EFBIG: a full disk)."""
    def limit_files() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "caloquant.cli", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, preexec_fn=limit_files, timeout=300)


# -- 1, 2, 3: generate on a full disk, concurrently, into a directory -------------------------------------


def _gen_args(ckpt: Path, out: Path, *extra: object) -> list[object]:
    return ["generate", "--model", ckpt, "--n", 24, "--energy", "10:500", "--batch", 4, "--chunk", 8,
            "--engine", "torch", "-q", "-o", out, *extra]


def test_1_generate_disk_full_keeps_exact_committed_rows(ckpt, tmp_path, capsys, monkeypatch) -> None:
    full_run = tmp_path / "full.h5"
    assert run_cli(capsys, *_gen_args(ckpt, full_run))[0] == 0
    out = tmp_path / "cut.h5"
    fail_writes_after(monkeypatch, full_run.stat().st_size // 2)
    code, err = run_cli(capsys, *_gen_args(ckpt, out))
    assert code == 2 and "No space left" in err and "--resume" in err
    monkeypatch.undo()
    part = read_showers(out.with_name("cut.h5.partial"))  # a valid file: every committed row intact
    assert 0 < len(part) < 24 and np.all(part.energy > 0) and np.all(part.ecal.sum(axis=(1, 2, 3)) > 0)
    assert run_cli(capsys, *_gen_args(ckpt, out, "--resume"))[0] == 0
    a, b = read_showers(full_run), read_showers(out)
    assert np.array_equal(a.ecal, b.ecal) and np.array_equal(a.energy, b.energy)
    assert leftovers(tmp_path) == []


def test_1_generate_real_full_disk_subprocess(ckpt, tmp_path) -> None:
    code = main([str(a) for a in _gen_args(ckpt, tmp_path / "full.h5")])
    size = (tmp_path / "full.h5").stat().st_size
    (tmp_path / "full.h5").unlink()
    assert code == 0
    r = with_fsize_limit(size // 2, *map(str, _gen_args(ckpt, tmp_path / "g.h5")), cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--resume" in r.stderr and "Traceback" not in r.stderr
    part = read_showers(tmp_path / "g.h5.partial")
    assert np.all(part.energy > 0)


def test_2_concurrent_generate_is_refused_with_owner(ckpt, tmp_path, capsys) -> None:
    out = tmp_path / "x.h5"
    with OutputLock(out):
        code, err = run_cli(capsys, *_gen_args(ckpt, out, "--resume"))
        assert code == 2 and f"PID {os.getpid()}" in err and "another run" in err
    assert not out.with_name("x.h5.partial").exists()
    assert run_cli(capsys, *_gen_args(ckpt, out))[0] == 0 and leftovers(tmp_path) == []


def test_2_lock_is_released_when_its_owner_dies(tmp_path) -> None:
    code = (f"import sys, os; sys.path.insert(0, {str(SRC)!r}); from caloquant._atomic import OutputLock; "
            f"l = OutputLock({str(tmp_path / 'y.h5')!r}); os._exit(0)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / ".y.h5.lock").exists()  # stale file, but no lock held
    OutputLock(tmp_path / "y.h5").release()


def test_3_generate_into_a_directory_fails_first(ckpt, tmp_path, capsys) -> None:
    (tmp_path / "d").mkdir()
    code, err = run_cli(capsys, *_gen_args(ckpt, tmp_path / "d"))
    assert code == 2 and "is a directory" in err and leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


# -- 4, 5, 12, 16: artifacts are verified -------------------------------------------------------------------


def test_4_modified_weights_next_to_their_card_are_refused(tmp_path, capsys) -> None:
    torch = pytest.importorskip("torch")
    from caloquant.models.registry import _weights_dir

    state = torch.load(_weights_dir() / "ecal25.pt", weights_only=True)
    key = next(iter(state))
    state[key] = state[key] + 1e-3
    torch.save(state, tmp_path / "ecal25.pt")
    shutil.copy(_weights_dir() / "ecal25.json", tmp_path / "ecal25.json")
    code, err = run_cli(capsys, *_gen_args(tmp_path / "ecal25.pt", tmp_path / "o.h5"))
    assert code == 2 and "does not match its model card" in err


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> Path:
    pytest.importorskip("openvino")
    from caloquant.export import export_openvino

    return export_openvino(ckpt, tmp_path_factory.mktemp("ir") / "model.xml")


def _copy_ir(src: Path, folder: Path, **meta_changes: object) -> Path:
    folder.mkdir()
    for suffix in (".xml", ".bin", ".spec.json"):
        shutil.copy(src.with_suffix(suffix), folder / f"model{suffix}")
    side = folder / "model.spec.json"
    meta = json.loads(side.read_text())
    meta.update(meta_changes)
    side.write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))
    return folder / "model.xml"


def test_4_tuned_model_without_provenance_or_rejected_is_refused(ckpt, exported, tmp_path) -> None:
    from caloquant.runtime import open_generator

    with pytest.raises(ModelError, match="records no source_sha256"):
        open_generator(ckpt, precision=_copy_ir(exported, tmp_path / "a", source_sha256=None))
    with pytest.raises(ModelError, match="rejected by the tuner"):
        open_generator(ckpt, precision=_copy_ir(exported, tmp_path / "b", accepted=False))


def test_4_tampered_or_truncated_export_cache_is_rebuilt(ckpt, tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("openvino")
    from caloquant.runtime import open_generator

    monkeypatch.setenv("CALOQUANT_CACHE_DIR", str(tmp_path / "cache"))
    first = open_generator(ckpt, batch=4).generate(np.array([100.0, 200.0]), seed=1)
    (entry,) = (tmp_path / "cache" / "export").glob("*-xml")  # the IR (converted from the cached ONNX)
    weights = entry / "model.bin"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    weights.write_bytes(bytes(blob))
    again = open_generator(ckpt, batch=4).generate(np.array([100.0, 200.0]), seed=1)
    assert "rebuilding it" in capsys.readouterr().err
    assert np.array_equal(first.ecal, again.ecal)
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    open_generator(ckpt, batch=4)
    assert "rebuilding it" in capsys.readouterr().err


def test_5_invalid_ir_and_malformed_spec_are_one_line(ckpt, exported, tmp_path, capsys) -> None:
    bad = _copy_ir(exported, tmp_path / "a")
    bad.write_text("<net>not an IR")
    code, err = run_cli(capsys, *_gen_args(ckpt, tmp_path / "o.h5", "--engine", "openvino", "--precision", bad))
    assert code == 2 and "not a readable" in err
    side = _copy_ir(exported, tmp_path / "b")
    side.with_suffix(".spec.json").write_text("{broken")
    code, err = run_cli(capsys, *_gen_args(ckpt, tmp_path / "o.h5", "--engine", "openvino", "--precision", side))
    assert code == 2 and "model.spec.json: not a readable caloquant model spec" in err


def test_12_rejected_tune_is_not_written_as_model_xml(exported, tmp_path) -> None:
    from caloquant.export.files import read_model
    from caloquant.models import DEFAULT_SPECS
    from caloquant.quantize.source import ResolvedModel
    from caloquant.quantize.workflow import REJECTED, _save

    src = ResolvedModel(read_model(exported), exported, "0" * 64, "g.pt", "g.pt", DEFAULT_SPECS["ecal25"])
    _save(read_model(exported), tmp_path, src, accepted=False)
    assert (tmp_path / REJECTED).exists() and not (tmp_path / "model.xml").exists()
    assert json.loads((tmp_path / REJECTED).with_suffix(".spec.json").read_text())["accepted"] is False


@pytest.mark.parametrize("kind", ["pickle", "truncated"])
def test_16_corrupt_or_malicious_pt_is_one_clear_line(tmp_path, capsys, kind) -> None:
    torch = pytest.importorskip("torch")
    from caloquant.models.registry import _weights_dir

    bad = tmp_path / "bad.pt"
    if kind == "pickle":
        torch.save({"x": Interrupted("x")}, bad)  # any non-tensor object
    else:
        bad.write_bytes((_weights_dir() / "ecal25.pt").read_bytes()[:5000])
    code, err = run_cli(capsys, *_gen_args(bad, tmp_path / "o.h5"))
    assert code == 2 and "weights_only" not in err and str(bad) in err
    assert ("refused" in err) if kind == "pickle" else ("truncated or corrupt" in err)


# -- 6, 14: quantize inputs ------------------------------------------------------------------------------


@pytest.mark.parametrize("data", ["gan", [1, 2], {"kind": "gan", "n": "many", "seed": 1, "batch": 4},
                                  {"kind": "gan", "n": -5, "seed": 1, "batch": 4}, {"kind": "gan"}])
def test_6_malformed_calibration_data_is_an_input_error(data) -> None:
    from caloquant.models import DEFAULT_SPECS
    from caloquant.quantize import gan_calibration

    with pytest.raises(InputError, match="calibration_data"):
        gan_calibration(DEFAULT_SPECS["ecal25"], data)  # type: ignore[arg-type]


def test_6_recipe_fields_of_the_wrong_type(tmp_path, capsys) -> None:
    from caloquant.quantize.recipe import FORMAT

    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"format": FORMAT, "source_sha256": "x", "precision": {}, "calibration": {},
                                  "calibration_data": "gan"}))
    code, err = run_cli(capsys, "quantize", "--model", "ecal25", "--recipe", recipe, "-o", tmp_path / "q")
    assert code == 2 and "calibration_data" in err and not (tmp_path / "q").exists()


def test_14_failed_quantize_leaves_no_folder(tmp_path, capsys) -> None:
    pytest.importorskip("openvino")
    torch = pytest.importorskip("torch")
    torch.save({"x": Interrupted("x")}, tmp_path / "evil.pt")
    for args in (["--model", tmp_path / "evil.pt"], ["--model", "ecal25", "--recipe", tmp_path / "none.json"],
                 ["--model", "ecal25", "--showers", 3]):
        code, _ = run_cli(capsys, "quantize", *args, "-o", tmp_path / "q")
        assert code == 2 and not (tmp_path / "q").exists()


# -- 7, 8, 9, 10, 17: shower files and simulate -----------------------------------------------------------


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sim") / "mc.h5"
    write_showers(path, simulate(60, "10:100", seed=2))
    return path


def test_7_string_energies_are_refused_everywhere(small_file, tmp_path, capsys) -> None:
    bad = tmp_path / "s.h5"
    with h5py.File(bad, "w") as f:
        f["ECAL"] = read_showers(small_file).ecal
        f["energy"] = np.array([b"lots"] * 60)
    for args in (["info", bad], ["convert", bad, "-o", tmp_path / "c.h5", "--format", "3dgan"],
                 ["validate", small_file, bad, "-q"]):
        code, err = run_cli(capsys, *args)
        assert code == 2 and "'energy' holds" in err and "expected numbers" in err
    assert leftovers(tmp_path) == [] and not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize("command", ["simulate", "generate"])
def test_8_absurd_shower_counts(ckpt, tmp_path, capsys, command) -> None:
    base = _gen_args(ckpt, tmp_path / "o.h5") if command == "generate" else \
        ["simulate", "--energy", "100", "-q", "-o", tmp_path / "o.h5", "--n", 5]
    i = base.index("--n") + 1
    for n in ("99999999999999999999999", str(10**12)):
        base[i] = n
        code, err = run_cli(capsys, *base)
        assert code == 2 and "exceeds" in err
    assert list(tmp_path.iterdir()) == []


def test_9_simulate_real_full_disk_subprocess(tmp_path) -> None:
    r = with_fsize_limit(300_000, "simulate", "-o", "s.h5", "--n", "400", "--chunk", "64", "--energy", "100",
                         "-q", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "s.h5: write failed (File too large)" in r.stderr and list(tmp_path.iterdir()) == []


def test_9_convert_disk_full_leaves_nothing(small_file, tmp_path, capsys, monkeypatch) -> None:
    fail_writes_after(monkeypatch, 20_000)
    code, err = run_cli(capsys, "convert", small_file, "-o", tmp_path / "c.h5", "--format", "calochallenge")
    assert code == 2 and "write failed (No space left on device)" in err and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_10_17_signals_in_simulate_leave_nothing(tmp_path, capsys, monkeypatch, signum, code) -> None:
    from caloquant.data import ShowerWriter

    append = ShowerWriter.append

    def signal_during_append(self: ShowerWriter, showers: object) -> None:
        append(self, showers)  # type: ignore[arg-type]
        signal.getsignal(signum)(signum, None)  # as the interpreter delivers it

    monkeypatch.setattr(ShowerWriter, "append", signal_during_append)
    rc, err = run_cli(capsys, "simulate", "--n", 40, "--chunk", 8, "--energy", 50, "-q", "-o", tmp_path / "s.h5")
    assert rc == code and "interrupted: nothing written" in err and list(tmp_path.iterdir()) == []


def test_10_signal_outside_a_run_is_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr("caloquant.data.summary.print_summary",
                        lambda path: signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None))
    assert run_cli(capsys, "info", "x.h5") == (143, "caloquant: error: terminated")


def test_17_outputs_are_not_overwritten_without_overwrite(small_file, tmp_path, capsys) -> None:
    out = tmp_path / "s.h5"
    out.write_bytes(b"precious")
    for args in (["simulate", "--n", 3, "--energy", 50, "-q"], ["convert", small_file, "--format", "3dgan"]):
        code, err = run_cli(capsys, *args, "-o", out)
        assert code == 2 and "already exists; pass --overwrite" in err and out.read_bytes() == b"precious"
    assert run_cli(capsys, "simulate", "--n", 3, "--energy", 50, "-q", "--overwrite", "-o", out)[0] == 0
    assert len(read_showers(out)) == 3


@pytest.mark.parametrize("field, value, message", [("ECAL", 1e30, "visible for a"), ("energy", 1e30, "above")])
def test_17_absurd_energies_are_flagged(small_file, tmp_path, capsys, field, value, message) -> None:
    bad = tmp_path / "b.h5"
    shutil.copy(small_file, bad)
    with h5py.File(bad, "r+") as f:
        f[field][3] = np.full(f[field].shape[1:], value, dtype=f[field].dtype)
    code, err = run_cli(capsys, "info", bad)
    assert code == 2 and "shower 3" in err and message in err and "wrong units" in err


# -- 11, 13, 15 ----------------------------------------------------------------------------------------------


def test_11_resume_refuses_other_seed_batch_or_data(small_file, tmp_path) -> None:
    pytest.importorskip("torch")
    from caloquant.train import TrainConfig
    from caloquant.train.loop import Trainer

    tiny = dict(batch_size=2, chunk_size=20, threads=1, seed=3, eval_showers=10)
    Trainer(TrainConfig(**tiny), small_file, tmp_path / "run", progress=False).checkpoint()
    for change, message in ((dict(seed=4), "used seed 3, not 4"), (dict(batch_size=3), "used batch_size 2, not 3")):
        with pytest.raises(InputError, match=message):
            Trainer(TrainConfig(**{**tiny, **change}), small_file, tmp_path / "run", resume=True, progress=False)
    other = tmp_path / "other.h5"
    write_showers(other, read_showers(small_file, 0, 40))
    with pytest.raises(InputError, match="trained on other data"):
        Trainer(TrainConfig(**tiny), other, tmp_path / "run", resume=True, progress=False)
    assert Trainer(TrainConfig(**tiny), small_file, tmp_path / "run", resume=True, progress=False).cfg.seed == 3


def test_13_too_few_showers_is_not_enough_data(small_file, tmp_path, capsys) -> None:
    three = tmp_path / "three.h5"
    write_showers(three, read_showers(small_file, 0, 3))
    code, err = run_cli(capsys, "validate", small_file, three, "-q")
    assert code == 2 and "not enough data: 3 showers" in err


def test_13_thin_energy_bin_gives_no_verdict() -> None:
    from caloquant.validate.metrics import MetricResult

    m = MetricResult("3dgan_moments", 0.0, 0.1, noise_floor=1.0, empty_bins=["100 GeV"]).judge()
    assert m.passed is None and m.verdict == "not enough data" and m.to_dict()["verdict"] == "not enough data"


@pytest.mark.parametrize("args", [["generate", "--n", "abc"], ["quantize", "--tolerance", "abc"],
                                  ["simulate", "--no-such-option"], ["validate"], ["nonsense"]])
def test_15_usage_errors_are_one_line(capsys, args) -> None:
    code, err = run_cli(capsys, *args)
    assert code == 2 and err.startswith("caloquant: error: ") and "╭" not in err
