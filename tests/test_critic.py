"""The light critic, the physics features and the distribution loss of CPU adversarial training (issue 23)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from caloquant.data import ShowerSet, write_showers
from caloquant.errors import InputError
from caloquant.geometry import CLIC_ECAL
from caloquant.models.critic import (COUNT_THRESHOLDS_GEV, LightCritic, feature_count, shower_features,
                                     soft_cell_counts, space_to_depth)
from caloquant.models.registry import build_discriminator, load_generator
from caloquant.models.spec import DEFAULT_SPECS, ModelSpec, shower_noise
from caloquant.train import TrainConfig, Trainer
from caloquant.train.data import preprocess
from caloquant.train.hardware import count_flops
from caloquant.train.loop import RETUNABLE, readout_floor
from caloquant.train.losses import (SPECTRUM_EDGES_GEV, cell_count_loss, cell_spectrum, centroid_loss,
                                   condition_basis, depth_loss, lateral_loss, layer_centroids, layer_depth,
                                   layer_occupancy, layer_shapes, mean_abs_error, occupancy_loss, physics_loss,
                                   profile_loss, readout_cut, resolution_loss, sampling_fraction_loss,
                                   scale_trend_loss, shape_loss, shower_lateral, sliced_distance, spectrum_loss)
from caloquant.validate import compute_features
from caloquant.validate.fluctuations import fluctuation_ratios

TINY = dict(batch_size=4, checkpoint_every=2, eval_showers=40, chunk_size=50, threads=1, seed=5, precision="fp32",
            critic="light", dist_weight=1.0)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory, mc_small: ShowerSet) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.h5"
    write_showers(path, mc_small[:300])
    return path


@pytest.fixture(scope="module")
def real(mc_small: ShowerSet) -> tuple[torch.Tensor, torch.Tensor]:
    b = preprocess(mc_small[:64], DEFAULT_SPECS["ecal25"], ecal_cut=10.0)
    return torch.from_numpy(b.images), torch.from_numpy(b.energy)


def _forward_flops(module: torch.nn.Module, *args: torch.Tensor) -> float:
    with count_flops() as total:
        module(*args)
    return total() / len(args[0])


@pytest.mark.parametrize("arch", ["ecal25", "angle51"])
def test_light_critic_costs_under_a_tenth_of_the_reference(arch: str) -> None:
    spec = DEFAULT_SPECS[arch]
    x = torch.rand(2, *spec.window.shape)
    e, theta = torch.full((2,), 1.0), torch.full((2,), 1.5)
    reference = _forward_flops(build_discriminator(spec), x)
    light = build_discriminator(spec, kind="light")
    cost = _forward_flops(light, x, e, theta)
    assert cost < 0.1 * reference
    out = light(x, e, theta)
    assert set(out) == {"logit", "energy", "ecal"}  # the angle term is the trainer's (shower_tilt), not a head


def test_space_to_depth_keeps_every_cell() -> None:
    x = torch.arange(2 * 5 * 3 * 4, dtype=torch.float32).reshape(2, 5, 3, 4)
    y = space_to_depth(x)
    assert y.shape == (2, 8, 3, 2, 2)
    assert torch.equal(y.sum((1, 2, 3, 4)), x.sum((1, 2, 3)))
    assert y[0, 0, 0, 0, 0] == x[0, 0, 0, 0] and y[0, 7, 0, 0, 0] == x[0, 1, 1, 1]


def test_shower_features_are_finite_physical_and_differentiable(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, energy = real
    images = images.clone().requires_grad_(True)
    f = shower_features(images, energy, 100.0, 0.85)
    assert f.shape == (len(images), feature_count(25)) and torch.isfinite(f).all()
    visible = images.detach().pow(1 / 0.85).flatten(1).sum(1) / 100.0  # GeV
    assert torch.allclose(f[:, 0].exp(), visible / (100.0 * energy), rtol=1e-4)
    counts = f[:, 1 + 3 * 25 + 6 : 1 + 3 * 25 + 6 + 5]
    assert (counts[:, :-1] >= counts[:, 1:]).all()  # more cells above a lower threshold
    f.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


def test_feature_standardisation_is_fitted_and_saved(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, energy = real
    critic = LightCritic((25, 25, 25))
    critic.fit_features(images, energy)
    f = critic.features(images, energy)
    varies = shower_features(images, energy, 100.0, 0.85).std(0) > 1e-2  # (a constant column stays constant)
    assert varies.sum() > 80 and f.mean(0).abs().max() < 1e-3 and (f.std(0)[varies] - 1).abs().max() < 1e-2
    assert {"feat_mean", "feat_scale"} <= set(critic.state_dict())


@pytest.mark.parametrize("statistic", ["wasserstein", "energy"])
def test_sliced_distance_sees_spread_not_only_means(real: tuple[torch.Tensor, torch.Tensor], statistic: str) -> None:
    images, energy = real
    f = shower_features(images, energy, 100.0, 0.85)
    torch.manual_seed(0)
    same = sliced_distance(f, f, energy, groups=1, statistic=statistic)
    shrunk = f.mean(0) + 0.3 * (f - f.mean(0))  # right means, too small fluctuations
    shifted = f + 0.5 * f.std(0)
    d_shrunk = sliced_distance(shrunk, f, energy, groups=1, statistic=statistic)
    d_shifted = sliced_distance(shifted, f, energy, groups=1, statistic=statistic)
    if statistic == "wasserstein":
        assert same == 0
    else:  # unbiased: a sample against itself reads a little below 0 (the pairs of a shower with itself)
        assert -0.5 * min(d_shrunk, d_shifted) < same <= 0
    assert d_shrunk > 0.1 and d_shifted > 0.1
    perm = torch.randperm(len(f))  # a distance between samples: shower order does not matter
    torch.manual_seed(1)
    a = sliced_distance(shrunk, f, energy, groups=1, statistic=statistic)
    torch.manual_seed(1)
    assert torch.isclose(a, sliced_distance(shrunk[perm], f, energy[perm], groups=1, statistic=statistic))


def test_energy_statistic_does_not_pull_the_spread_in_with_few_showers_per_group() -> None:
    """With 8 showers a group (batch 32 in 4 groups), the sorted-value Wasserstein distance is smaller, on
    average, for fakes at 0.75x the reals' spread than for fakes drawn like the reals: minimising it narrows the
    fluctuations. The energy distance's expectation is lowest for fakes drawn like the reals."""
    gen = torch.Generator().manual_seed(7)
    energy = torch.linspace(0.1, 5.0, 32)

    def mean_loss(spread: float, statistic: str) -> float:
        torch.manual_seed(3)
        total = 0.0
        for _ in range(150):
            real = torch.randn(32, 3, generator=gen)
            fake = spread * torch.randn(32, 3, generator=gen)
            total += float(sliced_distance(fake, real, energy, groups=4, projections=8, statistic=statistic))
        return total / 150

    assert mean_loss(0.75, "wasserstein") < mean_loss(1.0, "wasserstein")
    for narrow in (0.5, 0.75):
        assert mean_loss(1.0, "energy") < mean_loss(narrow, "energy")
    assert mean_loss(1.0, "energy") < mean_loss(1.5, "energy")
    with pytest.raises(ValueError, match="statistic"):
        sliced_distance(energy[:, None], energy[:, None], energy, groups=1, statistic="mmd")


@pytest.mark.parametrize("term", ["sf", "count", "physics", "profile"])
def test_split_mean_statistic_does_not_pull_the_spread_in(term: str) -> None:
    """The group-mean terms' plain |mean error| gradient, averaged over batches of 8 fakes a group against reals of
    the same distribution, says "narrower" (E|m_fake - m_real| grows with the fakes' spread); the split gradient
    says nothing about the spread, yet still moves a wrong mean the right way."""
    gen = torch.Generator().manual_seed(11)
    energy = torch.linspace(0.1, 5.0, 32)

    def loss(fake: torch.Tensor, real: torch.Tensor, statistic: str) -> torch.Tensor:
        if term == "sf":
            return sampling_fraction_loss(fake.flatten(1).sum(1), real.flatten(1).sum(1), energy, 4, statistic)
        if term == "count":
            return cell_count_loss(fake.flatten(1)[:, :3], real.flatten(1)[:, :3], energy, 4, statistic)
        if term == "physics":
            return physics_loss(fake, real, energy, 1.0, 4, statistic)
        return profile_loss(fake, real, energy, 1.0, 4, statistic)

    def spread_gradient(statistic: str, scale: float = 1.0) -> tuple[float, float]:
        total, total_scale = 0.0, 0.0
        def draw() -> torch.Tensor:  # shower-to-shower and cell-to-cell fluctuations around 1.15
            return (0.6 * torch.rand(32, 1, 1, 1, generator=gen) + 0.2 * torch.rand(32, 4, 4, 4, generator=gen)
                    - 0.4)

        for _ in range(300):
            real, noise = 1.15 + draw(), draw()
            s = torch.tensor(1.0, requires_grad=True)
            k = torch.tensor(scale, requires_grad=True)
            loss(k * (1.15 + s * noise), real, statistic).backward()
            total, total_scale = total + float(s.grad), total_scale + float(k.grad)
        return total / 300, total_scale / 300

    plain, split = spread_gradient("absolute")[0], spread_gradient("split")[0]
    assert plain > 0.002  # descent narrows the fakes
    assert abs(split) < 0.25 * plain
    if term != "physics":  # normalised shapes: blind to the scale
        for statistic in ("absolute", "split"):  # fakes 10 % low: both raise them
            assert spread_gradient(statistic, scale=0.9)[1] < 0
    with pytest.raises(ValueError, match="statistic"):
        mean_abs_error(energy[:, None], energy[:1], torch.sub, "median")


def test_sampling_fraction_loss_sees_the_energy_scale_per_energy_group() -> None:
    energy = torch.tensor([0.1, 0.2, 3.0, 4.0])
    real = torch.tensor([10.0, 20.0, 300.0, 400.0])
    assert sampling_fraction_loss(real, real, energy, groups=2) == 0
    assert sampling_fraction_loss(0.9 * real, real, energy, groups=2) == pytest.approx(0.1)
    # showers swapped within an energy group: the group means, hence the scale, are right
    assert sampling_fraction_loss(real[[1, 0, 3, 2]], real, energy, groups=2) == pytest.approx(0.0, abs=1e-7)
    # 10 % too low at low energy and 10 % too high at high energy is no match, though the batch total nearly is
    mixed = real * torch.tensor([0.9, 0.9, 1.1, 1.1])
    assert sampling_fraction_loss(mixed, real, energy, groups=2) == pytest.approx(0.1)
    fake = (0.9 * real).requires_grad_()
    sampling_fraction_loss(fake, real, energy, groups=2).backward()
    assert fake.grad is not None and (fake.grad < 0).all()  # raising the low fakes lowers the loss


def test_soft_cell_counts_count_cells_above_each_threshold() -> None:
    spec = DEFAULT_SPECS["ecal25"]
    gev = torch.zeros(1, *spec.window.shape)
    gev.view(-1)[:7] = 1.0  # 7 cells of 1 GeV, far above every threshold
    gev.view(-1)[7:107] = 1e-7  # 100 cells far below the lowest one
    counts = soft_cell_counts((spec.xscale * gev) ** spec.xpower, spec.xscale, spec.xpower)
    assert counts.shape == (1, len(COUNT_THRESHOLDS_GEV))
    assert counts[0, -1] == pytest.approx(7.0, abs=0.01)  # 100 MeV threshold: the seven cells
    assert counts[0, 0] == pytest.approx(7.0 + 100 * np.tanh(1e-2 ** spec.xpower), rel=1e-4)  # faint ones: a bit


def test_cell_count_loss_sees_missing_cells_per_energy_group(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, energy = real
    spec = DEFAULT_SPECS["ecal25"]
    counts = soft_cell_counts(images, spec.xscale, spec.xpower)
    assert cell_count_loss(counts, counts, energy, groups=4) == 0
    faint = (images > 0) & (images < 0.1 * images.flatten(1).amax(1).view(-1, 1, 1, 1))
    every_other = (torch.arange(images[0].numel()) % 2 == 0).view(images.shape[1:])
    fewer = torch.where(faint & every_other, 0.0, images).requires_grad_()  # half the faint cells switched off
    loss = cell_count_loss(soft_cell_counts(fewer, spec.xscale, spec.xpower), counts, energy, groups=4)
    assert loss > 0.05
    loss.backward()
    on = fewer.detach() > 0
    assert fewer.grad is not None and (fewer.grad[on] <= 0).all() and (fewer.grad[on] < 0).any()  # brighter: better


def test_resolution_loss_compares_relative_spreads_per_energy_group() -> None:
    gen = torch.Generator().manual_seed(3)
    energy = torch.cat([torch.full((8,), 0.1), torch.full((8,), 4.0)])
    frac = 1 + torch.randn(16, generator=gen) * torch.cat([torch.full((8,), 0.10), torch.full((8,), 0.05)])
    real = frac * energy * 2.0  # visible energy: 10 % spread at low energy, 5 % at high energy
    assert resolution_loss(real, real, energy, groups=2) == 0
    assert resolution_loss(0.9 * real, real, energy, groups=2) == pytest.approx(0.0, abs=1e-6)  # scale-free
    mean = torch.cat([real[:8].mean().expand(8), real[8:].mean().expand(8)])
    wide = mean + 2 * (real - mean)  # every spread doubled
    assert resolution_loss(wide, real, energy, groups=2) == pytest.approx(np.log(2), rel=1e-5)
    narrow = (mean + 0.5 * (real - mean)).requires_grad_()
    assert resolution_loss(narrow, real, energy, groups=2).item() == pytest.approx(np.log(2), rel=1e-5)
    # both groups' spreads right in the pooled batch is not enough: swapping the groups' spreads is seen
    swapped = torch.cat([mean[:8] + 0.5 * (real[:8] - mean[:8]), mean[8:] + 2 * (real[8:] - mean[8:])])
    assert resolution_loss(swapped, real, energy, groups=2) == pytest.approx(np.log(2), rel=1e-5)
    resolution_loss(narrow, real, energy, groups=2).backward()
    assert narrow.grad is not None and (narrow.grad * (narrow.detach() - mean)).sum() < 0  # widening helps
    assert resolution_loss(real[:3], real[:3], energy[:3], groups=4) == 0  # groups shrink to two showers or more
    assert resolution_loss(real[:1], real[:1], energy[:1], groups=4) == 0


def test_scale_trend_loss_sees_an_angle_dependent_scale_and_leaves_fluctuations_free() -> None:
    gen = torch.Generator().manual_seed(5)

    def batch(n: int, spread: float) -> tuple[torch.Tensor, ...]:
        energy = 0.1 + 4.9 * torch.rand(n, generator=gen, dtype=torch.float64)
        theta = np.pi / 3 + np.pi / 3 * torch.rand(n, generator=gen, dtype=torch.float64)
        real = 2 * energy * (1 + spread * torch.randn(n, generator=gen, dtype=torch.float64))
        fake = 2 * energy * (1 + spread * torch.randn(n, generator=gen, dtype=torch.float64))
        return energy, theta, real, fake

    # fluctuations alone, however wide: zero on average over batches (the projection's own noise is subtracted)
    for spread in (0.05, 0.2):
        losses = torch.stack([scale_trend_loss(*[t.float() for t in (f, r, e, th)], True) for e, th, r, f in
                              (batch(32, spread) for _ in range(400))])
        assert abs(float(losses.mean())) < 4 * float(losses.std()) / 20 + 1e-6
        assert float(losses.std()) > 0
    # a scale that runs with the angle (+-20 % over 60-120 degrees) stands far above that, and its gradient
    # lowers the trend; the same scale error as a constant offset (the SF term's business) too
    energy, theta, real, fake = (t.float() for t in batch(32, 0.05))
    tilted = (fake * (1 + 0.2 * (theta - np.pi / 2) / (np.pi / 6))).requires_grad_()
    loss = scale_trend_loss(tilted, real, energy, theta, True)
    assert float(loss.detach()) > 0.005
    loss.backward()
    assert tilted.grad is not None
    assert float((tilted.grad * (theta - np.pi / 2)).sum()) > 0  # lower at large angles, higher at small
    assert float(scale_trend_loss(fake * 1.2, real, energy, theta, True)) > 0.02
    # without angles (ecal25) the basis is {1, ln E}: an energy trend counts, and there is nothing else to fit
    flat = torch.full_like(theta, np.pi / 2)
    assert condition_basis(energy, flat, False).shape == (32, 2)
    assert condition_basis(energy, theta, True).shape == (32, 6)
    assert float(scale_trend_loss(fake * energy ** 0.1, real, energy, flat, False)) > 0.005
    assert float(scale_trend_loss(fake[:3], real[:3], energy[:3], theta[:3], True)) == 0  # too few to fit


def test_layer_centroids_in_cells_from_the_window_centre() -> None:
    images = torch.zeros(2, 25, 25, 3)
    images[0, 12, 12, 0] = 10.0  # on the axis
    images[0, 14, 11, 1] = 10.0  # two cells off in x, one in y
    images[1, 10, 12, 0] = images[1, 14, 12, 0] = 10.0  # two cells each side: centred on average
    c = layer_centroids(images, 100.0, 0.85, floor_gev=1e-12)
    assert torch.allclose(c[0], torch.tensor([0.0, 2.0, 0.0, 0.0, -1.0, 0.0]), atol=1e-5)
    assert torch.allclose(c[1], torch.zeros(6), atol=1e-5)  # and the empty layers sit at the centre
    faint = torch.zeros(1, 25, 25, 1)
    faint[0, 24, 12, 0] = (100.0 * 1e-4) ** 0.85  # 0.1 MeV at the edge: the 1 MeV floor keeps it near the centre
    assert float(layer_centroids(faint, 100.0, 0.85)[0, 0]) == pytest.approx(12 * 0.1 / 1.1, rel=1e-4)


def test_layer_occupancy_counts_read_out_cells_per_layer() -> None:
    spec = DEFAULT_SPECS["ecal25"]
    cells = np.zeros((1, 25, 25, 25), dtype=np.float32)
    cells[0, :3, 0, 0] = 1e-3  # three read-out cells in layer 0
    cells[0, 3:5, 0, 0] = 1e-5  # two far below the readout threshold
    cells[0, 0, 0, 24] = 2e-4  # one just above it, in the last layer
    occ = layer_occupancy(torch.from_numpy(spec.to_training(cells)), spec.xscale, spec.xpower)
    counts = torch.expm1(occ)[0]
    assert counts[0] == pytest.approx(3.0, abs=0.01) and counts[24] == pytest.approx(1.0, abs=0.01)
    assert counts[1:24].abs().max() < 1e-6


def test_occupancy_loss_sees_cells_moved_between_layers(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, energy = real
    occ = layer_occupancy(images, 100.0, 0.85)
    torch.manual_seed(0)
    assert occupancy_loss(occ, occ, energy, groups=4) == 0
    back_heavy = images.clone()
    back_heavy[..., :3] = 0  # the first three layers fire nothing
    torch.manual_seed(0)
    assert occupancy_loss(layer_occupancy(back_heavy, 100.0, 0.85), occ, energy, groups=4) > 0.1


def test_profile_loss_weighs_the_tails_like_the_profile_metric(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Zero for the real batch itself; showers stripped of their lateral tails (under 1 % of the energy) cost it ten
    times what they cost the physics term (L1 on normalised profiles); a faint tail cell below the readout threshold
    reads 0, yet raising it lowers the loss (its gradient is not cut)."""
    images, energy = real
    assert profile_loss(images, images, energy, 0.85, groups=4) == 0
    cored = images.clone()
    cored[:, :8] = 0
    cored[:, -8:] = 0  # nothing beyond 4 cells from the axis in x
    assert profile_loss(cored, images, energy, 0.85, groups=4) > 10 * physics_loss(cored, images, energy, 0.85, 4)
    floor = float(images[images > 0].min())
    faint = cored.clone()
    faint[:, :8] = 0.5 * floor  # below the readout: as good as nothing
    faint.requires_grad_(True)
    loss = profile_loss(faint, images, energy, 0.85, groups=4)
    assert float(loss.detach()) == pytest.approx(float(profile_loss(cored, images, energy, 0.85, groups=4)), rel=1e-6)
    loss.backward()
    assert faint.grad is not None and faint.grad[:, :8].sum() < 0  # raising the faint tail lowers the loss


def test_layer_shapes_measure_what_validation_measures(mc_small: ShowerSet) -> None:
    """Per-layer x, y widths and mean radius of MC showers, in cells, equal validation's (in mm / cell size) wherever
    a layer holds well over the 1 MeV floor."""
    spec = DEFAULT_SPECS["ecal25"]
    showers = mc_small[:32]
    cells = np.asarray(showers.ecal, dtype=np.float32)
    shapes = layer_shapes(torch.from_numpy(spec.xscale * cells), spec.xscale).numpy()
    f = compute_features(showers)
    layer_energy = cells.sum((1, 2))
    full = layer_energy > 0.2  # GeV: the floor shifts these by < 0.5 %
    assert full.sum() > 50
    for k, col in enumerate((f.layer_width_x, f.layer_width_y, f.layer_ec_r)):
        np.testing.assert_allclose(shapes[:, 25 * k:25 * (k + 1)][full], col[full] / CLIC_ECAL.cell_mm, rtol=1e-2)
    assert layer_shapes(torch.zeros(1, 25, 25, 25), 100.0).abs().max() < 0.011  # empty layers read near 0


def test_shape_loss_sees_read_out_cells_far_from_the_axis(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Zero for the real batch; a read-out cell 8 cells out in every layer costs it; the same cell below the readout
    threshold reads 0, yet lowering it (or raising it) still has a gradient."""
    images, energy = real
    torch.manual_seed(0)
    assert shape_loss(images, images, energy, 100.0, 0.85, groups=4) == 0
    floor = float(images[images > 0].min())
    wide = images.clone()
    wide[:, 20, 12, :] = 20 * floor  # a read-out cell 8 cells out in x, in every layer
    torch.manual_seed(0)
    assert shape_loss(wide, images, energy, 100.0, 0.85, groups=4) > 0.3
    faint = images.clone()
    faint[:, 20, 12, :] = 0.5 * floor
    faint.requires_grad_(True)
    torch.manual_seed(0)
    loss = shape_loss(faint, images, energy, 100.0, 0.85, groups=4)
    cut = images.clone()
    cut[:, 20, 12, :] = 0
    torch.manual_seed(0)
    base = shape_loss(cut, images, energy, 100.0, 0.85, groups=4)
    assert float(loss.detach()) == pytest.approx(float(base), abs=1e-6)
    loss.backward()
    assert faint.grad is not None and faint.grad[:, 20, 12, :].abs().sum() > 0


def test_centroid_loss_sees_layers_off_the_axis(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, energy = real
    c = layer_centroids(images, 100.0, 0.85)
    torch.manual_seed(0)
    assert centroid_loss(c, c, energy, groups=4) == 0
    off = c.clone().requires_grad_(True)
    shifted = off + torch.cat([torch.full((25,), -0.1), torch.zeros(25)])  # every layer 0.1 cells off in x
    loss = centroid_loss(shifted, c, energy, groups=2)
    assert loss > 0.05
    loss.backward()
    assert off.grad is not None and off.grad[:, :25].sum() < 0  # moving back towards +x lowers it
    # a layer empty in every real shower has no spread: a small offset there stays a small loss
    quiet = c.clone()
    quiet[:, 0] = 0.0
    moved = quiet.clone()
    moved[:, 0] = 0.01
    assert centroid_loss(moved, quiet, energy, groups=1) < 0.1


def test_layer_depth_measures_what_validation_measures(mc_small: ShowerSet) -> None:
    """Layer energies (log10 GeV), mean depth and depth spread of MC showers equal validation's."""
    showers = mc_small[:32]
    cells = np.asarray(showers.ecal, dtype=np.float32)
    depth = layer_depth(torch.from_numpy(100.0 * cells), 100.0).numpy()
    f = compute_features(showers)
    np.testing.assert_allclose(depth[:, :25], np.log10(f.layer_energy + 1e-5), atol=1e-4)
    np.testing.assert_allclose(depth[:, 25], f.moments[:, 2], atol=1e-3)
    np.testing.assert_allclose(depth[:, 26], np.sqrt(f.moments[:, 5]), atol=1e-3)


def test_depth_loss_sees_showers_that_all_start_alike(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Zero for the real batch; the same showers moved two layers deeper cost it, and so do showers each moved to
    the batch's median depth (the mean-shower failure: same mean depth, a quarter of the spread); the gradient
    reaches the cells."""
    images, energy = real
    torch.manual_seed(0)
    assert depth_loss(images, images, energy, 100.0, 0.85, groups=4) == 0
    mu = layer_depth(images.clamp_min(0).pow(1 / 0.85), 100.0)[:, 25]
    alike = torch.zeros_like(images)
    for i, shift in enumerate(torch.round(mu.median() - mu).int().tolist()):
        moved = torch.roll(images[i], shift, dims=2)
        keep = torch.arange(25) - shift
        alike[i] = moved * ((keep >= 0) & (keep < 25))  # nothing wraps round
    spread = layer_depth(alike.clamp_min(0).pow(1 / 0.85), 100.0)[:, 25].std()
    assert spread < 0.4 * mu.std()
    torch.manual_seed(0)
    assert depth_loss(alike, images, energy, 100.0, 0.85, groups=4) > 0.2
    deeper = torch.roll(images, 2, dims=3)
    deeper[..., :2] = 0
    deeper.requires_grad_(True)
    torch.manual_seed(0)
    loss = depth_loss(deeper, images, energy, 100.0, 0.85, groups=4)
    assert loss > 0.5
    loss.backward()
    assert deeper.grad is not None and deeper.grad.abs().sum() > 0


def test_shower_lateral_measures_what_validation_measures(mc_small: ShowerSet) -> None:
    """Shower x, y barycentres and widths of MC showers equal validation's mu_x, mu_y, sqrt(sigma2_x, sigma2_y)."""
    showers = mc_small[:32]
    lateral = shower_lateral(torch.from_numpy(np.asarray(showers.ecal, dtype=np.float32))).numpy()
    m = compute_features(showers).moments
    np.testing.assert_allclose(lateral, np.stack([m[:, 0], m[:, 1], np.sqrt(m[:, 3]), np.sqrt(m[:, 4])], 1),
                               atol=1e-3)


def test_lateral_loss_sees_widths_that_vary_too_much(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Zero for the real batch; every other shower blurred by a cell (widths that vary 2-3x as much as the MC's,
    the step-36142 failure) costs it, a whole batch one cell off the axis costs more; the gradient reaches the
    cells."""
    images, energy = real
    torch.manual_seed(0)
    assert lateral_loss(images, images, energy, 0.85, groups=4) == 0
    e = images.clamp_min(0).pow(1 / 0.85)
    blurred = e.clone()
    for axis in (1, 2):
        blurred = 0.25 * torch.roll(blurred, 1, axis) + 0.5 * blurred + 0.25 * torch.roll(blurred, -1, axis)
    mixed = e.clone()
    mixed[0::2] = blurred[0::2]
    assert shower_lateral(mixed)[:, 2].std() > 2 * shower_lateral(e)[:, 2].std()
    torch.manual_seed(0)
    varied = lateral_loss(mixed.pow(0.85), images, energy, 0.85, groups=4)
    assert varied > 0.15
    off_axis = torch.roll(e, 1, 1).pow(0.85).requires_grad_(True)
    torch.manual_seed(0)
    loss = lateral_loss(off_axis, images, energy, 0.85, groups=4)
    assert loss > 3 * varied
    loss.backward()
    assert off_axis.grad is not None and off_axis.grad.abs().sum() > 0


def test_cell_spectrum_counts_the_cells_validation_histograms(mc_small: ShowerSet) -> None:
    """The soft quarter-decade spectrum of MC showers holds the cells a hard histogram counts: per bin within
    20 % where a bin has a few cells a shower, and the same total between the outer edges within 2 %."""
    showers = mc_small[:32]
    cells = np.asarray(showers.ecal, dtype=np.float32).reshape(32, -1)
    soft = cell_spectrum(torch.from_numpy((100.0 * cells) ** 0.85), 100.0, 0.85).numpy().mean(0)
    hard = np.stack([np.histogram(c, SPECTRUM_EDGES_GEV)[0] for c in cells]).mean(0)
    assert soft.shape == (len(SPECTRUM_EDGES_GEV) - 1,)
    busy = hard > 3
    assert busy.sum() >= 8
    np.testing.assert_allclose(soft[busy], hard[busy], rtol=0.2)
    assert abs(soft.sum() / hard.sum() - 1) < 0.02


def test_spectrum_loss_sees_cells_off_the_peak(real: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Zero for the real batch; every cell twice as hot (the spectrum a quarter decade up) or smeared by a factor
    of two either way (the peak filled out) costs it, and the gradient of the scale points back to the reals."""
    images, energy = real
    spec = cell_spectrum(images, 100.0, 0.85)
    assert spectrum_loss(spec, spec, energy, groups=4) == 0
    scale = torch.tensor(2.0, requires_grad=True)
    hot = cell_spectrum(images * scale ** 0.85, 100.0, 0.85)
    loss = spectrum_loss(hot, spec, energy, groups=4)
    assert loss > 0.2
    loss.backward()
    assert scale.grad is not None and scale.grad > 0
    smear = torch.where(torch.rand(images.shape, generator=torch.Generator().manual_seed(1)) < 0.5, 0.5, 2.0)
    assert spectrum_loss(cell_spectrum(images * smear ** 0.85, 100.0, 0.85), spec, energy, groups=4) > 0.05


def test_count_and_res_weights_train_and_log(data_file: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(**{**TINY, "max_steps": 2, "log_every": 1, "count_weight": 1.0, "res_weight": 1.0,  # type: ignore[arg-type]
                         "centroid_weight": 1.0, "occupancy_weight": 1.0,
                         "profile_weight": 1.0, "shape_weight": 1.0, "depth_weight": 1.0,
                         "lateral_weight": 1.0, "spectrum_weight": 1.0, "scale_weight": 1.0,
                         "dist_statistic": "energy", "mean_statistic": "split"})
    Trainer(cfg, data_file, tmp_path, progress=False).run()
    rows = list(csv.DictReader((tmp_path / "losses.csv").open()))
    for term in ("g_count", "g_res", "g_cent", "g_occ", "g_prof", "g_shape", "g_depth", "g_lat", "g_spec"):
        assert len(rows) == 2 and all(np.isfinite(float(r[term])) and float(r[term]) > 0 for r in rows)
    assert all(np.isfinite(float(r["g_scale"])) for r in rows)  # unbiased: either sign near the goal
    assert {"count_weight", "res_weight", "centroid_weight", "occupancy_weight", "profile_weight",
            "shape_weight", "depth_weight", "lateral_weight", "spectrum_weight", "scale_weight", "dist_statistic",
            "mean_statistic"} <= set(RETUNABLE)
    with pytest.raises(InputError, match="dist_statistic"):
        TrainConfig(dist_statistic="mmd")
    with pytest.raises(InputError, match="mean_statistic"):
        TrainConfig(mean_statistic="median")


def test_sf_weight_trains_logs_and_upgrades_an_older_run(data_file: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """The term is logged as g_sf; a run written before the setting and the log column existed resumes: its
    rows are kept, and a setting it lacks counts as the default (no change reported unless one is made)."""
    Trainer(TrainConfig(max_steps=1, log_every=1, **TINY), data_file, tmp_path, progress=False).run()  # type: ignore[arg-type]
    ckpt = torch.load(tmp_path / "checkpoint-last.pt", weights_only=False)
    del ckpt["config"]["sf_weight"]  # a checkpoint of an older version
    torch.save(ckpt, tmp_path / "checkpoint-last.pt")
    capsys.readouterr()
    Trainer(TrainConfig(max_steps=1, **TINY), data_file, tmp_path, resume=True, progress=False,  # type: ignore[arg-type]
            retune=RETUNABLE)
    assert "resumed" not in capsys.readouterr().out
    log = tmp_path / "losses.csv"
    rows = list(csv.DictReader(log.open()))
    with log.open("w", newline="") as f:  # the columns of a log written by an older version
        old = [k for k in rows[0] if k != "g_sf"]
        w = csv.DictWriter(f, fieldnames=old, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    cfg = TrainConfig(**{**TINY, "max_steps": 2, "log_every": 1, "sf_weight": 10.0})  # type: ignore[arg-type]
    Trainer(cfg, data_file, tmp_path, resume=True, progress=False, retune=["sf_weight"]).run()
    assert "sf_weight 0.0 -> 10.0" in capsys.readouterr().out
    rows = list(csv.DictReader(log.open()))
    assert [r["step"] for r in rows] == ["1", "2"] and rows[0]["g_sf"] == "" and rows[0]["g_dist"] != ""
    assert np.isfinite(float(rows[1]["g_sf"])) and float(rows[1]["g_sf"]) >= 0


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_light_training_resumes_exactly_with_r1(data_file: Path, tmp_path: Path) -> None:
    kw = {**TINY, "r1": 1e-3}
    straight = Trainer(TrainConfig(max_steps=4, **kw), data_file, tmp_path / "a", progress=False)  # type: ignore[arg-type]
    straight.run()
    Trainer(TrainConfig(max_steps=2, **kw), data_file, tmp_path / "b", progress=False).run()  # type: ignore[arg-type]
    resumed = Trainer(TrainConfig(max_steps=4, **kw), data_file, tmp_path / "b", resume=True,  # type: ignore[arg-type]
                      progress=False)
    resumed.run()
    assert torch.equal(_params(straight.G), _params(resumed.G))
    assert torch.equal(_params(straight.D), _params(resumed.D))
    assert torch.equal(straight.D.feat_mean, resumed.D.feat_mean)  # type: ignore[arg-type]
    rows = list(csv.DictReader((tmp_path / "b" / "losses.csv").open()))
    assert all(np.isfinite(float(r[k])) for r in rows for k in ("d_real", "d_fake", "g_adv", "g_dist", "r1"))
    runs = list(csv.DictReader((tmp_path / "b" / "runs.csv").open()))
    assert [(r["run"], r["start_step"], r["end_step"]) for r in runs] == [("1", "0", "2"), ("2", "2", "4")]


def test_resume_on_another_precision_and_thread_count(data_file: Path, tmp_path: Path) -> None:
    """A campaign moves between machines: the next run may change precision and threads, and continues."""
    Trainer(TrainConfig(max_steps=1, **TINY), data_file, tmp_path, progress=False).run()  # type: ignore[arg-type]
    cfg = TrainConfig(**{**TINY, "max_steps": 2, "precision": "bf16", "threads": 2, "batch_size": 4})  # type: ignore[arg-type]
    resumed = Trainer(cfg, data_file, tmp_path, resume=True, progress=False)
    assert resumed.precision == "bf16" and resumed.cfg.critic == "light"
    res = resumed.run()
    assert res.state.step == 2 and torch.isfinite(_params(resumed.G)).all()
    runs = list(csv.DictReader((tmp_path / "runs.csv").open()))
    assert [r["precision"] for r in runs] == ["fp32", "bf16"] and runs[1]["threads"] == "2"


def test_best_checkpoint_is_generator_only(data_file: Path, tmp_path: Path) -> None:
    Trainer(TrainConfig(max_steps=2, eval_every=2, **TINY), data_file, tmp_path, progress=False).run()  # type: ignore[arg-type]
    best = torch.load(tmp_path / "checkpoint-best.pt", weights_only=True)
    assert "generator" in best and "discriminator" not in best and "opt_g" not in best
    metrics = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert float(metrics[0]["cells_ratio"]) > 0 and float(metrics[0]["resolution_ratio"]) > 0
    assert float(metrics[0]["profiles_metric"]) > 0


def test_bad_critic_settings_are_refused() -> None:
    with pytest.raises(InputError, match="critic"):
        TrainConfig(critic="tiny")
    with pytest.raises(InputError, match="dist_weight"):
        TrainConfig(dist_weight=float("nan"))
    with pytest.raises(InputError, match="r1"):
        TrainConfig(r1=-1.0)


def test_surrogate_relu_forward_is_relu_and_backward_reaches_dead_cells(data_file: Path, tmp_path: Path) -> None:
    from caloquant.models import load_generator
    from caloquant.models.layers import SurrogateReLU

    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0], requires_grad=True)
    y = SurrogateReLU(0.1)(x)
    assert torch.equal(y, torch.relu(x.detach()))
    y.sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.tensor([0.1, 0.1, 0.1, 1.0, 1.0]))
    tr = Trainer(TrainConfig(max_steps=1, dead_cell_grad=0.1, **TINY), data_file, tmp_path,  # type: ignore[arg-type]
                 progress=False)
    tr.run()
    assert isinstance(list(tr.G.modules())[-1], SurrogateReLU)
    gen = load_generator(tmp_path / "generator-best.pt")  # plain architecture, same state_dict keys
    assert isinstance(list(gen.module.modules())[-1], torch.nn.ReLU)
    with pytest.raises(InputError, match="dead_cell_grad"):
        TrainConfig(dead_cell_grad=2.0)


def test_readout_cut_zeroes_faint_cells_forward_and_passes_gradients_through() -> None:
    x = torch.tensor([0.0, 0.01, 0.02, 0.5], requires_grad=True)
    y = readout_cut(x, 0.015)
    assert y.tolist() == [0.0, 0.0, pytest.approx(0.02), 0.5]
    (y * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # straight through, faint cells too


def test_spec_readout_threshold_decodes_and_round_trips() -> None:
    spec = ModelSpec("ecal25", cell_threshold_gev=1e-4)
    cells = np.array([5e-5, 1e-4, 2e-3], dtype=np.float32)
    decoded = spec.to_physical(spec.to_training(cells))
    assert decoded[0] == 0.0 and decoded[2] == pytest.approx(2e-3, rel=1e-5)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    legacy = {k: v for k, v in spec.to_dict().items() if k != "cell_threshold_gev"}  # cards written before it
    assert ModelSpec.from_dict(legacy).cell_threshold_gev == 0.0
    assert DEFAULT_SPECS["ecal25"].to_physical(spec.to_training(cells))[0] > 0  # no threshold: every cell


def test_readout_threshold_trains_and_travels_with_the_checkpoint(data_file: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """With a readout threshold the generator is trained and evaluated through it, its checkpoint decodes through
    it, and a campaign can switch it on between runs."""
    Trainer(TrainConfig(max_steps=1, **TINY), data_file, tmp_path, progress=False).run()  # type: ignore[arg-type]
    thr = 1e-3
    tr = Trainer(TrainConfig(max_steps=3, readout_threshold=thr, count_weight=1.0, **TINY), data_file,  # type: ignore[arg-type]
                 tmp_path, resume=True, progress=False, retune=RETUNABLE)
    assert "readout_threshold 0.0 -> 0.001" in capsys.readouterr().out
    tr.run()
    loaded = load_generator(str(tmp_path / "checkpoint-last.pt"))
    assert loaded.spec.cell_threshold_gev == thr
    showers = tr.generate(np.full(40, 200.0), np.full(40, np.pi / 2), seed=1)
    assert showers.max() > 0 and np.all((showers == 0) | (showers >= thr))


def test_entry_jitter_trains_and_travels_with_the_checkpoint(data_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A campaign can switch the entry-point shift on between runs: the generator trains through it (gradients
    reach its weights), its checkpoint and generation carry it, and the showers' barycentres spread by it."""
    Trainer(TrainConfig(max_steps=1, **TINY), data_file, tmp_path, progress=False).run()  # type: ignore[arg-type]
    tr = Trainer(TrainConfig(max_steps=3, entry_jitter=0.5, **TINY), data_file, tmp_path,  # type: ignore[arg-type]
                 resume=True, progress=False, retune=RETUNABLE)
    assert "entry_jitter 0.0 -> 0.5" in capsys.readouterr().out
    assert tr.G.entry is not None and tr.G.entry.amplitude == 0.5
    before = [p.detach().clone() for p in tr.G.parameters()]
    tr.run()
    assert all(torch.isfinite(p).all() for p in tr.G.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, tr.G.parameters()))
    loaded = load_generator(str(tmp_path / "checkpoint-last.pt"))
    assert loaded.spec.entry_jitter_cells == 0.5 and loaded.module.entry is not None
    showers = tr.generate(np.full(200, 200.0), np.full(200, np.pi / 2), seed=1)
    assert np.array_equal(showers, tr.generate(np.full(200, 200.0), np.full(200, np.pi / 2), seed=1))
    tr.generator.entry = None  # the same weights without the stage
    centred = tr.generate(np.full(200, 200.0), np.full(200, np.pi / 2), seed=1)
    def mu_x(cells: np.ndarray) -> np.ndarray:
        profile = cells.sum((2, 3))
        return (profile * np.arange(profile.shape[1])).sum(1) / profile.sum(1)

    moved = mu_x(showers) - mu_x(centred)
    z = torch.from_numpy(tr.spec.latent(np.full(200, 200.0), None, shower_noise(1, np.arange(200), 200)))
    offsets = loaded.module.entry.offsets(z)[0].numpy()
    assert np.std(offsets) == pytest.approx(0.5 / np.sqrt(3), rel=0.2)  # uniform in +-0.5 cells
    # the barely trained generator fills its window, whose edges lose energy: barycentres move less, in step
    assert np.corrcoef(moved, offsets)[0, 1] > 0.95 and np.std(moved) > 0.1


def test_held_out_evaluation_counts_only_cells_above_the_samples_readout(data_file: Path, tmp_path: Path,
                                                                         mc_small: ShowerSet) -> None:
    """Faint cells under the held-out MC's smallest cell (its readout threshold) do not count as hits."""
    val = tmp_path / "val.h5"
    write_showers(val, mc_small[300:400])
    tr = Trainer(TrainConfig(max_steps=1, **TINY), data_file, tmp_path / "run", val=val, progress=False)  # type: ignore[arg-type]
    assert tr.val is not None
    floor = readout_floor(tr.val.ecal)
    assert 0 < floor < tr.val.ecal[tr.val.ecal > 0].min()
    fluff = np.where(tr.val.ecal > 0, tr.val.ecal, np.float32(floor / 10))  # every empty cell lit, faintly
    tr.generate = lambda energies, thetas, seed, batch=256: fluff  # type: ignore[method-assign]
    assert tr.evaluate()["cells_ratio"] == pytest.approx(1.0)
    every_cell = fluctuation_ratios(compute_features(tr.val), compute_features(ShowerSet(fluff, tr.val.energy,
                                                                                            tr.val.theta)))
    assert every_cell["cells_ratio"] > 2  # what counting every non-zero cell would say
    tr.generate = lambda energies, thetas, seed, batch=256: tr.val.ecal  # type: ignore[method-assign,union-attr]
    same = tr.evaluate()  # the held-out showers themselves: every shape metric is zero
    assert same["profiles_metric"] == pytest.approx(0.0, abs=1e-12)
    assert same["moments_metric"] == pytest.approx(0.0, abs=1e-12)
