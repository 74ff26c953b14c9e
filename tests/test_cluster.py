"""Sharded simulate/generate on a Dask LocalCluster: equal to one process, reruns, a killed worker, reading shards."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caloquant._atomic import sha256_file
from caloquant.cli import main
from caloquant.cluster import GenerateJob, SimulateJob, run_sharded
from caloquant.data import ShowerDataset, read_showers
from caloquant.data.shards import MANIFEST, Manifest, plan, shard_paths
from caloquant.errors import CaloquantError, DataFormatError, InputError
from caloquant.generate import generate_to_file
from caloquant.runtime import open_generator
from caloquant.simulate import simulate_to_file
from caloquant.validate.features import compute_features
from helpers import leftovers, read_h5, run_cli

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


# -- issue 24: every reader verifies each shard against the manifest; unrecorded shards are not trusted blindly --

N_SET = 40


def _finished_set(out: Path) -> Manifest:
    """A finished 40-shower, 2-shard simulate job written as a --cluster run writes it (no Dask needed)."""
    m = plan("simulate", N_SET, SIM["seed"], SimulateJob(N_SET, SIM["energy"], seed=SIM["seed"]).identity(), 2)
    out.mkdir()
    for s in m.shards:
        simulate_to_file(out / s.file, s.n, SIM["energy"], seed=SIM["seed"], first=s.start)
        s.sha256 = sha256_file(out / s.file)
    m.save(out / MANIFEST)
    return m


def _edit_manifest(out: Path, change) -> None:
    d = json.loads((out / MANIFEST).read_text())
    change(d["shards"])
    (out / MANIFEST).write_text(json.dumps(d))


def _replace_shard(out: Path, k: int, n: int, seed: int, first: int, *, record: bool) -> None:
    """Shard k's file replaced by another valid shower file; ``record`` also puts its sha256 in the manifest."""
    name = f"shard-{k:05d}.h5"
    simulate_to_file(out / name, n, SIM["energy"], seed=seed, first=first, overwrite=True)
    if record:
        digest = sha256_file(out / name)
        _edit_manifest(out, lambda shards: shards[k].update(sha256=digest))


def _swap(out: Path) -> None:
    a, b = out / "shard-00000.h5", out / "shard-00001.h5"
    a.rename(out / "tmp")
    b.rename(a)
    (out / "tmp").rename(b)


def _swap_hashes(shards) -> None:
    shards[0]["sha256"], shards[1]["sha256"] = shards[1]["sha256"], shards[0]["sha256"]


def _outside(out: Path, name: str) -> None:
    simulate_to_file(out.parent / "elsewhere.h5", 20, SIM["energy"], seed=SIM["seed"], first=20)
    _edit_manifest(out, lambda shards: shards[1].update(file=name.format(d=out.parent)))


TAMPERED = {
    "changed after recorded": (lambda out: _replace_shard(out, 1, 20, 99, 20, record=False), "was changed after"),
    "byte appended": (lambda out: (out / "shard-00001.h5").open("ab").write(b"x"), "was changed after"),
    "another run's shard, hash recorded": (lambda out: _replace_shard(out, 1, 20, 8, 20, record=True),
                                           "its seed is 8"),
    "230 showers for 40": (lambda out: _replace_shard(out, 1, 210, SIM["seed"], 20, record=True),
                           "holds 210 showers, the manifest says 20"),
    "swapped shards": (_swap, "was changed after"),
    "swapped shards and hashes": (lambda out: (_swap(out), _edit_manifest(out, _swap_hashes)),
                                  "its first_index is 20, the manifest's 0"),
    "same file twice": (lambda out: _edit_manifest(out, lambda s: s[1].update(file=s[0]["file"])),
                        "name the same file"),
    "absolute path": (lambda out: _outside(out, "{d}/elsewhere.h5"), "is outside the shard set"),
    "parent path": (lambda out: _outside(out, "../elsewhere.h5"), "is outside the shard set"),
    "symlink out of the set": (lambda out: (_outside(out, "shard-00001.h5"), (out / "shard-00001.h5").unlink(),
                                            (out / "shard-00001.h5").symlink_to(out.parent / "elsewhere.h5")),
                               "is outside the shard set"),
    "the manifest as a shard": (lambda out: _edit_manifest(out, lambda s: s[1].update(file=MANIFEST)),
                                "names the manifest itself"),
    "missing shard": (lambda out: (out / "shard-00001.h5").unlink(), "is missing"),
    "malformed sha256": (lambda out: _edit_manifest(out, lambda s: s[1].update(sha256="abc")), "malformed sha256"),
}


@pytest.mark.parametrize("case", list(TAMPERED))
def test_every_reader_verifies_the_shards_against_the_manifest(tmp_path, capsys, case) -> None:
    out = tmp_path / "set"
    _finished_set(out)
    assert main(["merge", str(out), "-o", str(tmp_path / "ok.h5")]) == 0
    assert len(read_showers(tmp_path / "ok.h5")) == N_SET
    tamper, message = TAMPERED[case]
    tamper(out)
    capsys.readouterr()
    merged = tmp_path / "merged.h5"
    for args in (["merge", out, "-o", merged], ["merge", out / MANIFEST, "-o", merged], ["info", out],
                 ["convert", out, "-o", merged, "--format", "calochallenge"],
                 ["validate", tmp_path / "ok.h5", out, "-q", "--no-classifier"]):
        code, err = run_cli(capsys, *args)
        assert code == 2 and message in err, (args, err)
    assert not merged.exists() and leftovers(tmp_path) == [] and leftovers(out) == []
    with pytest.raises(DataFormatError, match=message):
        ShowerDataset(out)


def test_an_unrecorded_shard_is_kept_only_with_its_workers_sha256(tmp_path) -> None:
    from caloquant.cluster.run import _load_or_plan, record_path

    out = tmp_path / "set"
    m = _finished_set(out)
    wanted = plan("simulate", N_SET, SIM["seed"], m.job, 2)
    shard1 = out / m.shards[1].file
    record_path(shard1).write_text(m.shards[1].sha256 + "\n")  # finished by a worker, not yet in the manifest
    _edit_manifest(out, lambda shards: shards[1].update(sha256=None))
    # intact: adopted without contacting any cluster, recorded in the manifest, the worker's record dropped
    r = run_sharded(out, SimulateJob(N_SET, **SIM), 2, cluster="tcp://127.0.0.1:1")
    assert (r.done, r.kept) == (0, 2) and Manifest.load(out / MANIFEST).shards[1].sha256 == m.shards[1].sha256
    assert leftovers(out) == []
    # altered after it was written (same attributes, other showers): redone, not adopted
    record_path(shard1).write_text(m.shards[1].sha256 + "\n")
    _edit_manifest(out, lambda shards: shards[1].update(sha256=None))
    _replace_shard(out, 1, 20, 99, 20, record=False)
    with h5py.File(shard1, "a") as f:
        f.attrs["seed"] = SIM["seed"]  # it claims to be the shard: only the recorded sha256 tells
    _, todo = _load_or_plan(out, wanted, overwrite=False)
    assert [s.index for s in todo] == [1] and not shard1.exists() and not record_path(shard1).exists()
    # finished without a record (the worker died before writing it): redone
    _replace_shard(out, 1, 20, SIM["seed"], 20, record=False)
    _edit_manifest(out, lambda shards: shards[1].update(sha256=None))
    _, todo = _load_or_plan(out, wanted, overwrite=False)
    assert [s.index for s in todo] == [1] and not shard1.exists()


def test_a_manifest_naming_files_outside_its_set_is_refused_by_the_writer(tmp_path, capsys) -> None:
    """A rerun or --overwrite never deletes a file the manifest names outside the set."""
    out = tmp_path / "set"
    _finished_set(out)
    _outside(out, "../elsewhere.h5")
    args = ["simulate", "-o", out, "--n", N_SET, "--energy", SIM["energy"], "--seed", SIM["seed"], "--cluster",
            "tcp://127.0.0.1:1", "--shards", 2, "-q"]
    for extra in ([], ["--overwrite"]):
        code, err = run_cli(capsys, *args, *extra)
        assert code == 2 and "is outside the shard set" in err
    assert (tmp_path / "elsewhere.h5").exists()


_entry = st.fixed_dictionaries({
    "index": st.integers(-1, 2), "start": st.integers(-1, 12), "stop": st.integers(0, 12), "seed": st.integers(6, 7),
    "file": st.one_of(st.sampled_from(["shard-00000.h5", "shard-00001.h5", "", ".", "..", "/etc/passwd",
                                       "../x.h5", "a/../../x.h5", MANIFEST, "sub/", "x\0.h5"]), st.text(max_size=8)),
    "sha256": st.one_of(st.none(), st.sampled_from(["0" * 64, "abc", "G" * 64]), st.integers())})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_entry, max_size=3), st.integers(-1, 12))
def test_any_manifest_reads_or_raises_one_typed_error(tmp_path, entries, n) -> None:
    out = tmp_path / "fuzz"
    out.mkdir(exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"format": "caloquant-shards/1", "kind": "simulate", "n": n, "seed": 7,
                                            "job": {}, "shards": entries}))
    try:
        paths = shard_paths(out / MANIFEST)
    except CaloquantError as e:
        assert "\n" not in str(e)
        return
    raise AssertionError(f"accepted {paths}")  # no shard file exists, so no manifest may pass
