"""Sharded simulate/generate on a Dask LocalCluster: equal to one process, reruns, a killed worker, reading shards."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from caloquant.cli import main
from caloquant.cluster import GenerateJob, SimulateJob, run_sharded
from caloquant.data import ShowerDataset, read_showers
from caloquant.data.shards import MANIFEST, Manifest, plan
from caloquant.errors import DataFormatError, InputError
from caloquant.generate import generate_to_file
from caloquant.runtime import open_generator
from caloquant.simulate import simulate_to_file
from caloquant.validate.features import compute_features
from helpers import read_h5

distributed = pytest.importorskip("distributed")

SIM = {"energy": "10:200", "seed": 7}


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, shared by the tests of this module."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as c:
        yield c


def _shards(outdir: Path) -> list[Path]:
    return [outdir / s.file for s in Manifest.load(outdir / MANIFEST).shards]


def _assert_same(outdir: Path, single: Path) -> None:
    a, b = read_h5(*_shards(outdir)), read_h5(single)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_plan_tiles_the_indices() -> None:
    m = plan("simulate", 10, 3, {}, 3)
    assert [(s.start, s.stop) for s in m.shards] == [(0, 4), (4, 7), (7, 10)]
    assert len({s.file for s in m.shards}) == 3 and all(s.seed == 3 for s in m.shards)
    for bad in (0, 11):
        with pytest.raises(InputError):
            plan("simulate", 10, 3, {}, bad)


@pytest.fixture(scope="module")
def sim_single(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("single") / "s.h5"
    return simulate_to_file(path, 30, SIM["energy"], seed=SIM["seed"])


def test_sharded_simulate_equals_single_run_and_reruns_only_bad_shards(client, sim_single, tmp_path) -> None:
    out = tmp_path / "shards"
    r = run_sharded(out, SimulateJob(30, **SIM), 3, cluster=client)
    assert (r.done, r.kept, r.n) == (3, 0, 30)
    _assert_same(out, sim_single)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["complete"] and manifest["kind"] == "simulate" and manifest["seed"] == SIM["seed"]
    assert [(s["start"], s["stop"], s["n"]) for s in manifest["shards"]] == [(0, 10, 10), (10, 20, 10), (20, 30, 10)]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    # intact: nothing to do, so no cluster is even contacted
    assert run_sharded(out, SimulateJob(30, **SIM), 3, cluster="tcp://127.0.0.1:1").done == 0
    shards = _shards(out)
    shards[0].unlink()
    with open(shards[2], "ab") as f:
        f.write(b"x")  # hash no longer matches
    r = run_sharded(out, SimulateJob(30, **SIM), 3, cluster=client)
    assert (r.done, r.kept) == (2, 1)
    _assert_same(out, sim_single)


def test_sharded_generate_equals_single_run(client, tmp_path) -> None:
    kw = {"energy": "20:300", "seed": 4}
    single = generate_to_file(tmp_path / "g.h5", open_generator("ecal25", engine="torch", batch=8), 24, **kw).path
    job = GenerateJob(24, "ecal25", engine="torch", batch="8", **kw)
    run_sharded(tmp_path / "g", job, 3, cluster=client)
    _assert_same(tmp_path / "g", single)
    m = Manifest.load(tmp_path / "g" / MANIFEST)
    assert m.job["model_source"].endswith("ecal25.pt") and m.job["precision"] == "fp32"
    assert len(m.job["model_sha256"]) == 64


def test_killed_worker_is_replaced_and_the_job_completes(client, sim_single, tmp_path) -> None:
    pids = client.run(os.getpid)
    killed: list[int] = []

    def kill_a_busy_worker(shard) -> None:
        if killed:
            return
        busy = [addr for addr, keys in client.processing().items() if keys] or list(pids)
        killed.append(pids[busy[0]])
        os.kill(pids[busy[0]], signal.SIGKILL)

    r = run_sharded(tmp_path / "k", SimulateJob(30, **SIM), 6, cluster=client, on_shard=kill_a_busy_worker)
    assert killed and r.done == 6
    _assert_same(tmp_path / "k", sim_single)
    client.wait_for_workers(2, timeout=60)
    assert killed[0] not in client.run(os.getpid).values()


def test_shards_read_as_one_sample(sim_single, tmp_path) -> None:
    out = tmp_path / "s"
    m = plan("simulate", 30, SIM["seed"], {}, 2)
    out.mkdir()
    for s in m.shards:
        simulate_to_file(out / s.file, s.n, SIM["energy"], seed=SIM["seed"], first=s.start)
    m.save(out / MANIFEST)
    with pytest.raises(DataFormatError, match="not finished"):
        ShowerDataset(out)
    assert main(["info", str(out)]) == 2
    from caloquant._atomic import sha256_file

    for s in m.shards:
        s.sha256 = sha256_file(out / s.file)
    m.save(out / MANIFEST)
    whole = read_showers(sim_single)
    for source in (out, out / MANIFEST):
        assert len(ShowerDataset(source)) == 30
        part = read_showers(source, 5, 25)  # spans both shards
        assert np.array_equal(part.ecal, whole.ecal[5:25])
    assert np.array_equal(compute_features(out).energy, compute_features(sim_single).energy)
    assert main(["info", str(out)]) == 0
    assert main(["merge", str(out), "-o", str(tmp_path / "merged.h5")]) == 0
    assert read_h5(tmp_path / "merged.h5")["ECAL"].shape[0] == 30
    _assert_same(out, tmp_path / "merged.h5")


@pytest.mark.parametrize("args, message", [
    (["simulate", "--n", "10", "--energy", "50", "--shards", "2"], "need --cluster"),
    (["simulate", "--n", "10", "--energy", "50", "--cluster", "nowhere"], "scheduler address"),
    (["simulate", "--n", "10", "--energy", "50", "--cluster", "local", "--workers", "0"], "--workers"),
    (["simulate", "--n", "10", "--energy", "50", "--cluster", "tcp://h:1", "--workers", "2"], "local cluster only"),
    (["simulate", "--n", "10", "--energy", "50", "--cluster", "local", "--shards", "11"], "--shards"),
    (["generate", "--model", "ecal25", "--n", "10", "--energy", "50", "--cluster", "local", "--resume"], "--resume"),
])
def test_bad_sharding_options_exit_2(args, message, tmp_path, capsys) -> None:
    assert main([*args, "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_different_job_in_the_same_directory_is_refused(tmp_path, capsys) -> None:
    out = tmp_path / "d"
    out.mkdir()
    plan("simulate", 20, 1, SimulateJob(20, "50", seed=1).identity(), 2).save(out / MANIFEST)
    args = ["simulate", "-o", str(out), "--n", "20", "--energy", "60", "--seed", "1", "--cluster", "local",
            "--shards", "2", "-q"]
    assert main(args) == 2
    assert "holds a different simulate job" in capsys.readouterr().err
