"""Validation features and metrics: definitions, closed forms, noise floors and sensitivity to distortions."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import linalg

from caloquant.data import ShowerSet
from caloquant.errors import DataFormatError, GeometryMismatchError, InputError
from caloquant.simulate import simulate
from caloquant.validate import (
    EnergyBins,
    MetricOptions,
    ShowerFeatures,
    classifier_auc,
    compute_features,
    fpd,
    frechet_distance,
    kpd,
    moments_metric,
    paired_difference,
    profiles_metric,
    sampling_fraction_mre,
    separation_power,
    validate,
)

FAST = MetricOptions(n_boot=40, classifier=False, fpd_batches=5, kpd_batch_size=1000)


def _widen(showers: ShowerSet, factor: float) -> ShowerSet:
    """Rescale x and y cell coordinates about the window centre by ``factor``, splitting energy linearly."""
    def matrix(n: int) -> np.ndarray:
        centre = (n - 1) / 2
        target = (np.arange(n) - centre) * factor + centre
        lo = np.floor(target).astype(int)
        frac = target - lo
        m = np.zeros((n, n))
        for i in range(n):
            for j, w in ((lo[i], 1 - frac[i]), (lo[i] + 1, frac[i])):
                if 0 <= j < n:
                    m[i, j] += w
        return m

    _, nx, ny, _ = showers.ecal.shape
    ecal = np.einsum("nxyz,xa,yb->nabz", showers.ecal, matrix(nx), matrix(ny), optimize=True)
    return ShowerSet(ecal, showers.energy, showers.theta)


@pytest.fixture(scope="session")
def ref_showers() -> ShowerSet:
    return simulate(1500, "10:500", seed=21)


@pytest.fixture(scope="session")
def ref(ref_showers: ShowerSet) -> ShowerFeatures:
    return compute_features(ref_showers)


@pytest.fixture(scope="session")
def other(ref_showers: ShowerSet) -> ShowerFeatures:
    return compute_features(simulate(1500, "10:500", seed=22))


@pytest.fixture(scope="session")
def distorted(ref_showers: ShowerSet) -> dict[str, ShowerFeatures]:
    s = simulate(1500, "10:500", seed=23)
    zeroed = s.ecal.copy()
    zeroed[..., 5] = 0.0
    return {
        "base": compute_features(s),
        "scaled": compute_features(ShowerSet(s.ecal * 1.03, s.energy, s.theta)),
        "wider": compute_features(_widen(s, 1.10)),
        "zeroed": compute_features(ShowerSet(zeroed, s.energy, s.theta)),
    }


@pytest.fixture(scope="session")
def suite(ref: ShowerFeatures, other: ShowerFeatures, distorted: dict[str, ShowerFeatures]):
    names = ["scaled", "wider", "zeroed"]
    return validate(ref, [other, *(distorted[n] for n in names)], names=["other", *names], options=FAST)


def test_separation_power_limits() -> None:
    h = np.array([1.0, 4.0, 2.0, 0.0])
    assert separation_power(h, 3 * h) == pytest.approx(0.0)
    assert separation_power(np.array([1.0, 2.0, 0.0, 0.0]), np.array([0.0, 0.0, 5.0, 1.0])) == pytest.approx(1.0)


def test_frechet_distance_matches_sqrtm_formula() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((4, 4)), rng.standard_normal((4, 4))
    s1, s2 = a @ a.T + 0.1 * np.eye(4), b @ b.T + 0.1 * np.eye(4)
    mu1, mu2 = rng.standard_normal(4), rng.standard_normal(4)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fpd_of_two_gaussians_equals_closed_form() -> None:
    rng = np.random.default_rng(1)
    s1, s2 = np.diag([1.0, 0.5, 2.0]), np.array([[1.5, 0.3, 0.0], [0.3, 1.0, 0.0], [0.0, 0.0, 0.7]])
    mu1, mu2 = np.zeros(3), np.array([0.5, -0.2, 0.1])
    x = rng.multivariate_normal(mu1, s1, 40_000)
    y = rng.multivariate_normal(mu2, s2, 40_000)
    value, err = fpd(x, y, normalise=False, num_batches=5)
    assert value == pytest.approx(frechet_distance(mu1, s1, mu2, s2), abs=max(5 * err, 0.02))
    assert fpd(np.full((100, 2), 2.0), np.zeros((100, 2)), num_batches=2)[0] == pytest.approx(2.0, abs=1e-3)


def test_kpd_closed_form_and_equal_distributions() -> None:
    assert kpd(np.full((50, 2), 2.0), np.zeros((50, 2)), num_batches=2)[0] == pytest.approx(15.0, rel=1e-5)
    assert kpd(np.full((50, 2), 2.0), np.zeros((50, 2)), normalise=False, num_batches=2)[0] == pytest.approx(624.0,
                                                                                                          rel=1e-5)
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((3000, 5)), rng.standard_normal((3000, 5))
    value, err = kpd(x, y, batch_size=1000)
    assert abs(value) < max(3 * err, 1e-3)


def test_moments_follow_the_3dgan_definition(ref_showers: ShowerSet, ref: ShowerFeatures) -> None:
    e = ref_showers.ecal[:3].astype(np.float64)
    total = e.sum(axis=(1, 2, 3))
    prof_x = e.sum(axis=(2, 3))
    i = np.arange(prof_x.shape[1])
    mu = (prof_x * i).sum(1) / total
    s2 = (prof_x * (i - mu[:, None]) ** 2).sum(1) / total
    np.testing.assert_allclose(ref.moments[:3, 0], mu, rtol=1e-5)
    np.testing.assert_allclose(ref.moments[:3, 3], s2, rtol=1e-5)


def test_chunked_features_equal_whole(ref_showers: ShowerSet, ref: ShowerFeatures) -> None:
    chunked = compute_features(ref_showers[:50], chunk_size=7)
    np.testing.assert_allclose(chunked.profile_z, ref.profile_z[:50], rtol=1e-6)
    np.testing.assert_array_equal(chunked.cell_hist, ref.cell_hist[:50])
    np.testing.assert_allclose(chunked.layer_width_r, ref.layer_width_r[:50], rtol=1e-5, atol=1e-9)


def test_angle_estimate_of_tilted_showers(mc_tilted: ShowerSet) -> None:
    f = compute_features(mc_tilted)
    assert f.tilted
    assert np.median(np.abs(np.rad2deg(f.theta_estimate - f.theta))) < 2.0


def test_identical_samples_give_zero(ref: ShowerFeatures) -> None:
    for metric in (moments_metric, profiles_metric, sampling_fraction_mre):
        assert metric(ref, ref) == 0.0
    result = validate(ref, ref, options=FAST).candidates["candidate_0"].metrics
    for name in ("3dgan_moments", "3dgan_profiles", "sampling_fraction_mre", "separation_power_mean",
                 "cell_spectrum_separation"):
        assert result[name].value == 0.0 and result[name].passed
    assert result["fpd"].passed and result["kpd"].passed


def test_legacy_doubles_the_moment_metric(ref: ShowerFeatures, other: ShowerFeatures) -> None:
    plain = moments_metric(ref, other)
    assert plain > 0
    assert moments_metric(ref, other, legacy=True) == pytest.approx(2 * plain)


def test_independent_mc_within_noise_floor(suite) -> None:
    metrics = suite.candidates["other"].metrics
    failed = [n for n, m in metrics.items() if not m.passed]
    assert not failed, {n: (metrics[n].value, metrics[n].error, metrics[n].noise_floor) for n in failed}


@pytest.mark.parametrize(("sample", "expected"), [
    ("scaled", ["sampling_fraction_mre", "cell_spectrum_separation"]),
    ("wider", ["3dgan_moments", "3dgan_profiles", "separation_power_mean", "fpd", "kpd"]),
    ("zeroed", ["sampling_fraction_mre", "separation_power_mean", "chi2_ndf_mean", "fpd", "kpd"]),
])
def test_distortions_are_flagged(suite, sample: str, expected: list[str]) -> None:
    metrics = suite.candidates[sample].metrics
    assert [n for n in expected if metrics[n].passed] == []


def test_json_schema_and_empty_bins(ref: ShowerFeatures, other: ShowerFeatures) -> None:
    bins = EnergyBins.gan3d((50.0, 100.0, 1000.0))
    result = validate(ref, other, bins=bins, options=FAST)
    doc = result.to_dict()
    m = doc["metrics"]["3dgan_moments"]
    assert set(m) >= {"value", "error", "noise_floor", "pass"}
    assert m["empty_bins"] == ["1000 GeV"] and m["per_bin"]["1000 GeV"] is None
    assert np.isfinite(m["value"])
    assert moments_metric(ref, other, bins=[50.0, 1000.0]) > 0


def test_paired_difference(ref: ShowerFeatures, other: ShowerFeatures, distorted: dict[str, ShowerFeatures]) -> None:
    same = paired_difference(ref, other, other, n_boot=50)
    assert same.value == 0.0 and same.error == 0.0
    base = compute_features(ShowerSet(np.zeros((1, 25, 25, 25)), [100.0], [np.pi / 2]))
    with pytest.raises(InputError, match="identical inputs"):
        paired_difference(ref, other, base)
    d = paired_difference(ref, distorted["base"], distorted["scaled"], metric="sampling_fraction_mre", n_boot=100)
    assert d.value > 5 * d.error and d.upper95 > d.value


def test_classifier_sees_a_zeroed_layer(ref: ShowerFeatures, other: ShowerFeatures,
                                        distorted: dict[str, ShowerFeatures]) -> None:
    xr = ref.classifier_vector()
    bad = classifier_auc(xr, distorted["zeroed"].classifier_vector(), seeds=(0,), max_iter=30)
    assert bad.auc > 0.95
    good = classifier_auc(xr, other.classifier_vector(), seeds=(0, 1), max_iter=30)
    assert abs(good.auc - 0.5) < 0.5 * (0.5 - abs(bad.auc - 0.5)) + 3 * good.error


def test_bad_inputs(ref: ShowerFeatures, mc_tilted: ShowerSet) -> None:
    with pytest.raises(GeometryMismatchError, match="window"):
        moments_metric(ref, mc_tilted)
    nan = np.zeros((3, 25, 25, 25), dtype=np.float32)
    nan[1, 3, 3, 3] = np.nan
    with pytest.raises(DataFormatError, match="NaN"):
        compute_features(ShowerSet(nan, [10.0, 20.0, 30.0], [np.pi / 2] * 3))
    with pytest.raises(InputError, match="unknown energy bins"):
        moments_metric(ref, ref, bins="weird")


def test_computation_does_not_import_matplotlib() -> None:
    code = "import caloquant.validate, caloquant.plotting, sys; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
