"""No silent wrong physics: reduced-precision engines are checked against FP32, once per model and machine."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from caloquant.cli import main
from caloquant.errors import PrecisionError
from caloquant.export import cache_dir
from caloquant.machine import isa_identity
from caloquant.models import load_generator
from caloquant.quantize.openvino_backend import Calibration
from caloquant.quantize.recipe import Recipe, replay_note
from caloquant.runtime import generator as generator_module
from caloquant.runtime import open_generator, precision_check
from caloquant.runtime.engines import OpenVINOEngine

pytest.importorskip("openvino")
pytestmark = pytest.mark.usefixtures("model_cache")


class SoundReducedPrecision(OpenVINOEngine):
    """A reduced-precision engine whose kernels are right on every machine: it computes in FP32 whatever precision
    it is opened in. These tests are about the check, not about this machine's BF16 kernels (OpenVINO's AMX BF16
    is really wrong, issue 12; test_runtime checks the real engines)."""

    def __init__(self, model_xml, spec, *, batch, streams=None, precision="fp32") -> None:
        super().__init__(model_xml, spec, batch=batch, streams=streams, precision="fp32")
        self.precision = precision


class HalvedReducedPrecision(SoundReducedPrecision):
    """A broken reduced-precision kernel, as AMX BF16 was in issue 12: every non-FP32 output is halved."""

    def submit(self, latent, done) -> None:
        if self.precision == "fp32":
            return super().submit(latent, done)
        return super().submit(latent, lambda raw: done(raw if isinstance(raw, BaseException) else 0.5 * raw))


@pytest.fixture(autouse=True)
def _plain_export(monkeypatch):
    """The same export on every machine (no convolution padded for this CPU's BF16 kernels, runtime.generator):
    these tests are about the check, and their engines compute in FP32 anyway."""
    monkeypatch.setattr(generator_module, "bf16_padding", lambda gen: [])


@pytest.fixture
def broken(monkeypatch, tmp_path):
    """The broken engine, with a cache of its own: a pass of the real engine cached by another test module (same
    weights, same machine) must not vouch for it, whatever order the tests run in."""
    monkeypatch.setattr(generator_module, "OpenVINOEngine", HalvedReducedPrecision)
    monkeypatch.setenv("CALOQUANT_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.isa
def test_broken_reduced_precision_is_refused_with_one_line(ckpt, broken, tmp_path, capsys) -> None:
    with pytest.raises(PrecisionError, match=r"bf16 vs FP32: .*\(5\d\.\d\d% off\).*tolerance 10%"):
        open_generator(ckpt, precision="bf16", batch=8)
    out = tmp_path / "g.h5"
    code = main(["generate", "--model", str(ckpt), "--n", "8", "--energy", "50", "--precision", "bf16", "-o",
                 str(out), "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "bf16 vs FP32" in err and "--fallback-fp32" in err
    assert not out.exists() and not out.with_name(out.name + ".partial").exists()  # never garbage in a file


@pytest.mark.isa
def test_fallback_to_fp32_is_explicit_and_logged(ckpt, broken, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="caloquant"):
        gen = open_generator(ckpt, precision="bf16", batch=8, fallback_fp32=True)
    assert gen.engine.precision == "fp32" and gen.check is None
    assert "falling back to fp32" in caplog.text and "bf16 vs FP32" in caplog.text
    ref = open_generator(ckpt, engine="torch", batch=8).generate([50.0, 200.0], seed=1)
    assert np.allclose(gen.generate([50.0, 200.0], seed=1).ecal, ref.ecal, rtol=1e-4, atol=1e-6)


def test_check_can_be_skipped_only_explicitly(ckpt, broken) -> None:
    """Demo and bench show the full-INT8 baseline next to the tuned model because its physics is off."""
    gen = open_generator(ckpt, precision="bf16", batch=8, check=False)
    assert gen.engine.precision == "bf16" and gen.check is None


def test_pass_is_cached_per_machine_and_isa_cap(ckpt, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(generator_module, "OpenVINOEngine", SoundReducedPrecision)
    monkeypatch.setenv("CALOQUANT_CACHE_DIR", str(tmp_path))  # its pass must not vouch for the real engine later
    gen = open_generator(ckpt, precision="bf16", batch=8)
    assert gen.check is not None and gen.check.passed and gen.check.deviation <= precision_check.TOLERANCE
    identity = {"model_sha256": gen.model_sha256, "spec": load_generator(ckpt).spec.digest(), "precision": "bf16",
                "precision_sha256": "", "engine": "openvino", "batch": 8}
    key = precision_check.check_key(identity)
    assert (cache_dir() / "precision-checks" / f"{key}.json").exists()

    def never(*args, **kwargs):
        raise AssertionError("a cached pass must not be checked again")

    monkeypatch.setattr(precision_check, "compare", never)
    assert open_generator(ckpt, precision="bf16", batch=8).check == gen.check
    with monkeypatch.context() as m:  # a new definition of the check batch is checked again
        m.setattr(precision_check, "CHECK_BATCH_VERSION", precision_check.CHECK_BATCH_VERSION + 1)
        assert precision_check.check_key(identity) != key
    assert precision_check.check_key(identity) == key
    other = "SSE41" if os.environ.get("ONEDNN_MAX_CPU_ISA") == "AVX2" else "AVX2"  # run capped or not
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", other)  # another ISA is another machine for the check
    assert precision_check.check_key(identity) != key


def test_compare_measures_energy_and_moments() -> None:
    from caloquant.data.formats import ShowerSet

    rng = np.random.default_rng(0)
    ecal = rng.exponential(0.01, (4, 25, 25, 25)).astype(np.float32)
    ref = ShowerSet(ecal, np.full(4, 100.0), np.full(4, np.pi / 2))
    same = precision_check.compare("bf16", ref, ref)
    assert same.passed and same.deviation == 0.0
    low = precision_check.compare("int8", ShowerSet(0.5 * ecal, ref.energy, ref.theta), ref)
    assert not low.passed and low.energy == pytest.approx(0.5) and low.moments < 1e-6
    nan = precision_check.compare("bf16", ShowerSet(np.full_like(ecal, np.nan), ref.energy, ref.theta), ref)
    assert not nan.passed and nan.deviation == np.inf


def test_recipe_replay_on_another_isa_says_so() -> None:
    def tuned_on(machine: dict[str, object] | None) -> Recipe:
        return Recipe("m.pt", "0" * 64, {}, Calibration(), {}, machine=machine)

    here = isa_identity()
    assert replay_note(tuned_on(here)) is None
    assert "does not record the ISA" in str(replay_note(tuned_on(None)))
    other = {"cpu": "Intel Xeon", "isa": ["amx_bf16", "avx512f"], "caps": {}}
    note = str(replay_note(tuned_on(other)))
    assert "tuned on Intel Xeon (amx_bf16, avx512f)" in note and "re-checking its physics" in note
