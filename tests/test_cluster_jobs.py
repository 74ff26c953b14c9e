"""Sharded runs that start processes (the Geant4 engine on Dask), unreachable schedulers and reruns with other
options (issue 24, items 8 and 9)."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from caloquant.cluster import SimulateJob, run_sharded
from caloquant.cluster.run import check_workers, job_differences
from caloquant.data.shards import MANIFEST, Manifest, plan
from caloquant.errors import InputError, SimulationError
from caloquant.simulate import geant4
from helpers import read_h5, run_cli

distributed = pytest.importorskip("distributed")
needs_geant4 = pytest.mark.skipif(not geant4.available(),
                                  reason="geant4-pybind is not installed (no wheel for this platform?)")


class _Client:
    """Stands for a distributed.Client whose workers answer ``run`` with the given daemon flags."""

    def __init__(self, flags: dict[str, bool]) -> None:
        self.flags = flags

    def run(self, function: object) -> dict[str, bool]:
        return dict(self.flags)


@needs_geant4
def test_geant4_on_a_local_cluster_equals_one_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The Geant4 workers run inside the Dask workers (which are started non-daemonic for it)."""
    out, single = tmp_path / "shards", tmp_path / "single.h5"
    common = ["--n", "2", "--energy", "10", "--seed", "3", "--engine", "geant4", "-q"]
    assert run_cli(capsys, "simulate", "-o", out, *common, "--cluster", "local", "--workers", "1",
                   "--shards", "2")[0] == 0
    m = Manifest.load(out / MANIFEST)
    assert not m.missing and len(m.shards) == 2
    assert run_cli(capsys, "simulate", "-o", single, *common, "--workers", "1")[0] == 0
    a, b = read_h5(*[out / s.file for s in m.shards]), read_h5(single)
    assert np.array_equal(a["ECAL"], b["ECAL"]) and np.array_equal(a["energy"], b["energy"])


def test_geant4_job_on_daemonic_workers_is_refused_before_any_shard() -> None:
    job = SimulateJob(4, "10", engine="geant4")
    assert job.starts_processes and not SimulateJob(4, "10").starts_processes
    with pytest.raises(InputError, match="DASK_DISTRIBUTED__WORKER__DAEMON=False"):
        check_workers(_Client({"tcp://a:1": False, "tcp://b:2": True}), job)
    check_workers(_Client({"tcp://a:1": False}), job)
    check_workers(_Client({"tcp://b:2": True}), SimulateJob(4, "10"))  # GFlash shards start no processes


def test_geant4_refused_on_a_given_client_with_daemonic_workers(tmp_path: Path) -> None:
    """A client on daemonic workers (Dask's default): one error before any shard runs, no manifest left."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as lc, \
            distributed.Client(lc) as client, pytest.raises(InputError, match="daemonic"):
        run_sharded(tmp_path / "out", SimulateJob(2, "10", engine="geant4"), 1, cluster=client)
    assert not (tmp_path / "out" / MANIFEST).exists()


def test_geant4_engine_in_a_daemonic_process_is_one_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Daemonic:
        daemon = True

    monkeypatch.setattr(geant4.mp, "current_process", lambda: Daemonic())
    with pytest.raises(SimulationError, match="daemonic process"):
        geant4.check_can_start_processes()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_scheduler_is_refused_at_once_and_leaves_no_manifest(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Nothing listens on the port: a one-line error without the client's retries, and no manifest that would
    refuse the next run with other (default) options."""
    out = tmp_path / "out"
    code, err = run_cli(capsys, "simulate", "-o", out, "--n", "20", "--energy", "10", "-q",
                        "--cluster", f"tcp://127.0.0.1:{_closed_port()}")
    assert code == 2 and "cannot reach the Dask scheduler" in err
    assert not (out / MANIFEST).exists()


def test_scheduler_address_without_a_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "simulate", "-o", tmp_path / "o", "--n", "20", "--energy", "10", "-q",
                        "--cluster", "tcp://127.0.0.1:abc")
    assert code == 2 and "needs a port" in err


def test_a_different_job_names_what_differs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "d"
    out.mkdir()
    plan("simulate", 20, 1, SimulateJob(20, "50", seed=1).identity(), 2).save(out / MANIFEST)
    code, err = run_cli(capsys, "simulate", "-o", out, "--n", "20", "--energy", "60", "--seed", "1",
                        "--cluster", "local", "--shards", "4", "-q")
    assert code == 2 and "--shards 2 there, 4 now" in err and "--energy 50 there, 60 now" in err
    assert "--seed" not in err and "--n " not in err


def test_job_differences_names_every_changed_field() -> None:
    a = plan("simulate", 20, 1, SimulateJob(20, "50", seed=1).identity(), 2)
    b = plan("simulate", 30, 2, SimulateJob(30, "50", seed=2, angle="60").identity(), 2)
    text = job_differences(a, b)
    assert "--n 20 there, 30 now" in text and "--seed 1 there, 2 now" in text and "--angle 90 there, 60 now" in text
