"""Bounded validation memory: features spilled to disk and metrics streamed a block of showers at a time give the
same numbers as the in-memory path, and the memory a comparison holds does not grow with the samples."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from caloquant.data import ShowerSet
from caloquant.errors import InputError
from caloquant.simulate import simulate
from caloquant.validate import MetricOptions, ShowerFeatures, compare, compute_features, fpd, kpd, paired_difference
from caloquant.validate import features as features_module
from caloquant.validate import store as store_module
from caloquant.validate.bins import resolve_bins
from caloquant.validate.features import PER_SHOWER, normalised_vectors
from caloquant.validate.metrics import BootstrapCounts, bootstrap_counts
from caloquant.validate.store import DiskArray

FAST = MetricOptions(n_boot=20, classifier=False, fpd_batches=3, kpd_batch_size=300)
#: Metrics summed in floating point over blocks: equal to rounding (the others are equal to the bit).
ROUNDED = {"3dgan_moments", "3dgan_profiles", "sampling_fraction_mre"}


@pytest.fixture(scope="module")
def showers() -> tuple[ShowerSet, ShowerSet]:
    return simulate(700, "10:500", seed=31), simulate(600, "10:500", seed=32)


def _same_features(a: ShowerFeatures, b: ShowerFeatures) -> None:
    for name in PER_SHOWER:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_chunked_and_spilled_features_are_identical(showers: tuple[ShowerSet, ShowerSet]) -> None:
    whole = compute_features(showers[0], spill=False)
    for chunk_size in (1, 7, 256):
        chunked = compute_features(showers[0], chunk_size=chunk_size, spill=False)
        _same_features(chunked, whole)
        np.testing.assert_allclose(chunked.image_sum, whole.image_sum, rtol=1e-12)
    spilled = compute_features(showers[0], chunk_size=7, spill=True)
    assert spilled.spilled and not whole.spilled
    _same_features(spilled, whole)
    assert spilled.cell_hist.dtype == np.int32 and spilled.high_level()[1] == whole.high_level()[1]
    np.testing.assert_array_equal(spilled.high_level()[0], whole.high_level()[0])
    blocks = list(spilled.blocks(100))
    assert [(a, b) for a, b, _ in blocks] == [(k, min(k + 100, 700)) for k in range(0, 700, 100)]
    np.testing.assert_array_equal(np.concatenate([blk.moments for _, _, blk in blocks]), whole.moments)
    for a, b in zip(spilled.halves(3), whole.halves(3)):
        assert a.spilled
        _same_features(a, b)
        _same_features(a.subset(slice(5, 40)), b.subset(slice(5, 40)))


def test_spill_by_size(showers: tuple[ShowerSet, ShowerSet], monkeypatch: pytest.MonkeyPatch) -> None:
    window = showers[0].window
    row_bytes = 8 * (3 * 25 + 7 * 25 + 64)  # profiles, per-layer shapes, cell spectrum: 2.5 KiB a 25^3 shower
    assert features_module.spill_size(window) == features_module.SPILL_BYTES // row_bytes
    monkeypatch.setattr(features_module, "SPILL_BYTES", 100 * row_bytes)
    assert compute_features(showers[0][:100]).spilled is False
    assert compute_features(showers[0][:101]).spilled is True


def test_spilled_validation_equals_in_memory(showers: tuple[ShowerSet, ShowerSet],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    ref, cand = (compute_features(s, spill=False) for s in showers)
    bins = resolve_bins(None, ref.energy)
    expected = compare(ref, cand, bins, FAST)
    noise = compare(*ref.halves(0), bins, FAST)
    paired = paired_difference(ref, cand, cand, n_boot=20)
    monkeypatch.setattr(features_module, "BLOCK_SHOWERS", 97)  # several blocks, a short last one
    monkeypatch.setattr(store_module, "WINDOW_BYTES", 50_000)  # FPD/KPD draws read in many windows
    sref, scand = (compute_features(s, spill=True) for s in showers)
    for got, want in ((compare(sref, scand, bins, FAST), expected), (compare(*sref.halves(0), bins, FAST), noise)):
        assert list(got) == list(want)
        for name, m in want.items():
            tol = 1e-12 if name in ROUNDED else 0.0
            np.testing.assert_allclose([got[name].value, got[name].error], [m.value, m.error], rtol=tol,
                                       err_msg=name)
            assert got[name].per_bin.keys() == m.per_bin.keys()
            np.testing.assert_allclose(list(got[name].per_bin.values()), list(m.per_bin.values()), rtol=tol)
    got_paired = paired_difference(sref, scand, scand, n_boot=20)
    assert got_paired.value == paired.value == 0.0 and got_paired.upper95 == pytest.approx(paired.upper95, abs=1e-15)


def test_fpd_kpd_of_spilled_rows_equal_arrays(showers: tuple[ShowerSet, ShowerSet],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    ref, cand = (compute_features(s, spill=False) for s in showers)
    monkeypatch.setattr(features_module, "BLOCK_SHOWERS", 64)
    sref, scand = (compute_features(s, spill=True) for s in showers)
    real, gen = normalised_vectors(sref, scand)
    assert isinstance(real, DiskArray) and isinstance(gen, DiskArray)
    r_mem, g_mem = normalised_vectors(ref, cand)
    np.testing.assert_array_equal(real.read_rows(0, len(real)), r_mem)
    np.testing.assert_array_equal(gen.read_rows(0, len(gen)), g_mem)
    from caloquant.validate.distances import fpd_of_rows, kpd_of_rows

    xr, xc = ref.classifier_vector(), cand.classifier_vector()
    assert fpd_of_rows(real, gen, num_batches=3) == fpd(xr, xc, num_batches=3)
    assert kpd_of_rows(real, gen, batch_size=300) == kpd(xr, xc, batch_size=300)


def test_nonfinite_classifier_features_are_refused(showers: tuple[ShowerSet, ShowerSet]) -> None:
    bad = ShowerSet(showers[1].ecal[:50], showers[1].energy[:50], np.full(50, np.nan))
    with pytest.raises(InputError, match="NaN or infinite"):
        normalised_vectors(compute_features(showers[0], spill=True), compute_features(bad, spill=True))


def test_disk_array_rows_columns_and_gathers(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1000, 13))
    d = DiskArray(a.shape, np.float64)
    d.write_rows(0, a[:600])
    d.write_rows(600, a[600:])
    np.testing.assert_array_equal(d.read_rows(0, 1000), a)
    np.testing.assert_array_equal(d.read_segment(7, 3, 9), a[7, 3:9])
    monkeypatch.setattr(store_module, "WINDOW_BYTES", 40 * 8 * 13)  # 40 rows a window
    for index in (rng.integers(0, 1000, 3000), np.array([999, 0, 0, 5]), np.array([], dtype=np.int64)):
        np.testing.assert_array_equal(d.take(index), a[index])
    with pytest.raises(IndexError):
        d.take(np.array([1000]))
    t = DiskArray((13, 1000), np.float64)
    t.write_cols(0, a[:400].T)
    t.write_cols(400, a[400:].T)
    np.testing.assert_array_equal(t.read_rows(0, 13), a.T)
    d.close()
    t.close()


def test_bootstrap_counts_on_disk_equal_in_memory() -> None:
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    dense = bootstrap_counts(1001, 17, rng_a)
    disk = BootstrapCounts(1001, 17, rng_b)
    assert disk.shape == dense.shape and rng_a.integers(0, 1 << 30) == rng_b.integers(0, 1 << 30)
    np.testing.assert_array_equal(disk[:, 0:1001], dense)
    np.testing.assert_array_equal(disk[:5][:, 300:450], dense[:5, 300:450])
    assert disk[:5].shape == (5, 1001) and disk[:, 10:10].shape == (17, 0)


def test_compare_memory_does_not_grow_with_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    """Peak memory of a comparison of spilled samples at 2x and 4x the showers (traced numpy allocations)."""
    monkeypatch.setattr(features_module, "BLOCK_SHOWERS", 200)
    base = simulate(400, "10:500", seed=41)
    peaks = []
    for copies in (2, 4):
        big = ShowerSet(np.concatenate([base.ecal] * copies), np.tile(base.energy, copies),
                        np.tile(base.theta, copies))
        ref = compute_features(big, chunk_size=200, spill=True)
        cand = compute_features(big, chunk_size=200, spill=True)
        bins = resolve_bins(None, ref.energy)
        del big
        tracemalloc.start()
        try:
            compare(ref, cand, bins, MetricOptions(n_boot=20, classifier=False, fpd_batches=2, kpd_batch_size=200))
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 1.1 * peaks[0], peaks
