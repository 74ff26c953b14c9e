"""Loss terms of the 3DGAN game (gan3d.md section 2) and caloquant's physics term."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def mape(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Keras mean_absolute_percentage_error: 100 * mean |t - p| / max(|t|, 1e-7)."""
    return 100.0 * ((target - pred).abs() / target.abs().clamp_min(1e-7)).mean()


def bce_logits(logit: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy on the real/fake head (logits, numerically safer than sigmoid + log)."""
    return F.binary_cross_entropy_with_logits(logit, labels)


def _profiles(images: torch.Tensor, xpower: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """GeV-like energies, and per-shower energy profiles along x, y, z normalised to unit sum."""
    e = images.clamp_min(0).pow(1.0 / xpower)
    total = e.flatten(1).sum(1).clamp_min(1e-6).view(-1, 1)
    return e, [e.sum(axes) / total for axes in ((2, 3), (1, 3), (1, 2))]


def shower_moments(images: torch.Tensor, xpower: float) -> torch.Tensor:
    """Per-shower 1st and 2nd moments along x, y, z (3DGAN definitions), shape (N, 6), of the GeV-like image."""
    _, profiles = _profiles(images, xpower)
    out = []
    for prof in profiles:
        idx = torch.arange(prof.shape[1], device=prof.device, dtype=prof.dtype)
        mu = (prof * idx).sum(1)
        var = (prof * (idx.view(1, -1) - mu.view(-1, 1)) ** 2).sum(1)
        out += [mu, var]
    return torch.stack(out, 1)


def energy_groups(energy: torch.Tensor, groups: int) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The batch order by primary energy, and the positions (in that order) of ``groups`` equal-sized energy groups:
    the batch-level terms compare fakes and reals group by group, since fakes are generated at the real energies."""
    order = torch.argsort(energy)
    return order, torch.tensor_split(torch.arange(len(order), device=energy.device), min(groups, len(order)))


#: Gradients the batch-level mean terms can take (``mean_abs_error``).
MEAN_STATISTICS = ("absolute", "split")


ErrorFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_abs_error(rows: torch.Tensor, target: torch.Tensor, error: ErrorFn, statistic: str = "absolute"
                   ) -> torch.Tensor:
    """|error(m, target)| per column, m the mean of one energy group's fake rows (k, C), ``target`` the real one.

    ``absolute``: its plain gradient, whose sign follows the fakes' own sampling noise. On average that rewards a
    group mean that fluctuates less (E|m_fake - m_real| grows with the fakes' spread), so every such term pulls
    the shower-to-shower spread in. ``split``: the same value, with the gradient of each half of the rows signed by
    the other half's error (cross-fitting), which is independent of it: the expected gradient moves the mean and
    leaves the spread alone."""
    if statistic not in MEAN_STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(MEAN_STATISTICS)}, got {statistic!r}")
    value = error(rows.mean(0), target).abs()
    if statistic == "absolute" or len(rows) < 2:
        return value
    ea, eb = error(rows[0::2].mean(0), target), error(rows[1::2].mean(0), target)
    surrogate = 0.5 * (ea.detach().sign() * eb + eb.detach().sign() * ea)
    return value.detach() + surrogate - surrogate.detach()


def _relative_difference(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return (m - t) / t.abs().clamp_min(1e-6)


def _ratio_error(m: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return m / t - 1


def physics_loss(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, xpower: float,
                 groups: int, statistic: str = "absolute") -> torch.Tensor:
    """Shower-shape mismatch of energy-sorted groups of the batch: moments plus normalised profiles.

    For each group: the mean relative error of the group-averaged 1st and 2nd moments along x, y, z (the
    3DGAN moment metric at batch level) plus the L1 distance of the group-averaged normalised x, y, z
    profiles (in [0, 2] per axis, averaged over axes). Matching group means, rather than each shower to its
    real partner, keeps shower-to-shower fluctuations free (with ``statistic`` "split", ``mean_abs_error``, also
    on average over batches).
    """
    order, parts = energy_groups(energy, groups)
    _, pf = _profiles(fake[order], xpower)
    _, pr = _profiles(real[order], xpower)
    mf, mr = shower_moments(fake[order], xpower), shower_moments(real[order], xpower)
    terms = []
    for idx in parts:
        moments = mean_abs_error(mf[idx], mr[idx].mean(0), _relative_difference, statistic).mean()
        shapes = torch.stack([mean_abs_error(f[idx], r[idx].mean(0), torch.sub, statistic).sum()
                              for f, r in zip(pf, pr)]).mean()
        terms.append(moments + shapes)
    return torch.stack(terms).mean()


def group_mean_error(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, groups: int,
                     statistic: str = "absolute") -> torch.Tensor:
    """Mismatch of group means: the batch is sorted by energy and cut into ``groups``; in each, the relative error
    |mean fake / mean real - 1| of every column of ``fake``/``real`` ((N,) or (N, K), fakes generated at the real
    showers' energies), averaged over columns and groups. Means only, so the shower-to-shower spread stays free
    (on average over batches too with ``statistic`` "split": ``mean_abs_error``)."""
    order, parts = energy_groups(energy, groups)
    f, r = fake.float()[order], real.float()[order]
    f, r = f.reshape(len(f), -1), r.reshape(len(r), -1)
    return torch.stack([mean_abs_error(f[idx], r[idx].mean(0).clamp_min(1e-6), _ratio_error, statistic).mean()
                        for idx in parts]).mean()


def sampling_fraction_loss(fake_sum: torch.Tensor, real_sum: torch.Tensor, energy: torch.Tensor,
                           groups: int, statistic: str = "absolute") -> torch.Tensor:
    """Energy-scale mismatch: ``group_mean_error`` of the visible energies, the batch-level sampling-fraction error.
    The ECAL-sum MAPE pulls every shower towards a median of its partners' sums instead; this leaves the spread."""
    return group_mean_error(fake_sum, real_sum, energy, groups, statistic)


def resolution_loss(fake_sum: torch.Tensor, real_sum: torch.Tensor, energy: torch.Tensor,
                    groups: int) -> torch.Tensor:
    """Visible-energy resolution mismatch: in each energy group, |ln(r_fake / r_real)| where r is the relative
    spread (standard deviation over mean) of the visible fraction (sum / E_p) of the group's showers, averaged over
    groups. Both sides are sample spreads of the same number of showers at the same energies, so the term is zero
    in expectation when the generator's spread is the MC's; in logs, so too wide and too narrow weigh alike."""
    if len(energy) < 2:
        return fake_sum.float().sum() * 0.0  # no spread to compare in a batch of one
    order, parts = energy_groups(energy, min(groups, len(energy) // 2))  # at least two showers per group
    e = energy.float()[order].clamp_min(1e-6)
    f, r = fake_sum.float()[order] / e, real_sum.float()[order] / e

    def spread(v: torch.Tensor) -> torch.Tensor:
        return (v.std() / v.mean().clamp_min(1e-6)).clamp_min(1e-6)

    return torch.stack([(spread(f[idx]).log() - spread(r[idx]).log()).abs() for idx in parts]).mean()


def condition_basis(energy: torch.Tensor, theta: torch.Tensor, tilted: bool) -> torch.Tensor:
    """Smooth functions of the conditions, (N, K): {1, ln E} x {1, theta, theta^2}, the angle columns only for
    ``tilted`` showers (an angle model; decided by the model, not read from the batch, so no host sync), each column
    standardised over the batch (the span, all that a projection on it uses, does not depend on that)."""
    def standard(v: torch.Tensor) -> torch.Tensor:
        return (v - v.mean()) / v.std().clamp_min(1e-6)

    log_e = standard(energy.double().clamp_min(1e-9).log())
    cols = [torch.ones_like(log_e), log_e]
    if tilted:
        a = standard(theta.double())
        a2 = standard(a * a)
        cols += [a, a2, log_e * a, log_e * a2]
    return torch.stack(cols, 1)


def scale_trend_loss(fake_sum: torch.Tensor, real_sum: torch.Tensor, energy: torch.Tensor,
                     theta: torch.Tensor, tilted: bool) -> torch.Tensor:
    """Energy-scale mismatch as a smooth function of the conditions: the per-shower log ratio d of each fake's
    visible energy to its real partner's (same energy and angle) is projected on ``condition_basis``, and the
    term is the mean square of that projection less its expectation when fake and real differ by fluctuations
    alone (ESS - K/(N-K) RSS, over N: unbiased for equal variances), so it pulls the scale at every energy and
    angle to the MC's without pulling the shower-to-shower spread (zero in expectation for any spread). Group means
    over energy (``sampling_fraction_loss``) leave a scale that depends on the angle, or varies inside a group,
    free: angle51's step 1600 read 0.0158 of E at 60 degrees and 0.025 at 120 below 50 GeV, the MC 0.019-0.020."""
    basis = condition_basis(energy, theta, tilted)
    n, k = basis.shape
    if n <= k + 1:
        return fake_sum.float().sum() * 0.0  # too few showers to fit the trend
    q, _ = torch.linalg.qr(basis)
    d = fake_sum.double().clamp_min(1e-9).log() - real_sum.double().clamp_min(1e-9).log()
    ess: torch.Tensor = (q.T @ d).square().sum()
    rss = d.square().sum() - ess
    return ((ess - k / (n - k) * rss) / n).float()


def cell_count_loss(fake_counts: torch.Tensor, real_counts: torch.Tensor, energy: torch.Tensor,
                    groups: int, statistic: str = "absolute") -> torch.Tensor:
    """Occupancy mismatch: ``group_mean_error`` of the soft counts of cells above each threshold
    (``models.critic.soft_cell_counts``, (N, K)). It targets the cells hit per shower and the faint end of the
    cell spectrum directly, as the 3DGAN angle model's bin-count loss does, without tying each shower's count."""
    return group_mean_error(fake_counts, real_counts, energy, groups, statistic)


#: Statistics ``sliced_distance`` can compare projections with.
DIST_STATISTICS = ("wasserstein", "energy")


def _projected_distance(pf: torch.Tensor, pr: torch.Tensor, statistic: str) -> torch.Tensor:
    """Mean over projections (columns) of the 1-D distance between fake (n, P) and real (m, P) projected values.

    ``wasserstein``: the mean absolute difference of the sorted values (W1 of equal-sized samples). Its expectation
    over small samples is lowest for fakes narrower than the reals: with 8 showers a side (batch 32 in 4 groups) a
    Gaussian's W1 is lowest at 0.75x its spread, so the term pulls fluctuations in. ``energy``: the energy distance
    2 E|f - r| - E|f - f'| - E|r - r'| with the within-sample means over distinct pairs (U-statistics), an unbiased
    estimate whose expectation is lowest when the fakes' distribution is the reals'; it can read below 0."""
    if statistic == "wasserstein":
        return (torch.sort(pf, 0)[0] - torch.sort(pr, 0)[0]).abs().mean()
    n, m = pf.shape[0], pr.shape[0]
    cross = (pf.unsqueeze(1) - pr.unsqueeze(0)).abs().mean((0, 1))
    within_f = (pf.unsqueeze(1) - pf.unsqueeze(0)).abs().sum((0, 1)) / max(n * (n - 1), 1)
    within_r = (pr.unsqueeze(1) - pr.unsqueeze(0)).abs().sum((0, 1)) / max(m * (m - 1), 1)
    return (2 * cross - within_f - within_r).mean()


def sliced_distance(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, groups: int,
                    projections: int = 32, min_scale: float = 1e-3, statistic: str = "wasserstein") -> torch.Tensor:
    """Energy-conditioned distribution distance of per-shower feature vectors (N, F) of fake and real showers.

    Fakes are generated at the real batch's energies, so the batch is sorted by energy and cut into ``groups``;
    in each group the features (standardised by the real batch, each scale at least ``min_scale``) are projected
    on every axis and on ``projections`` random unit directions (drawn from torch's global generator, which the
    trainer seeds per step), and the 1-D ``statistic`` (``_projected_distance``: sliced Wasserstein-1 or sliced
    energy distance) of the group's projected fakes and reals averaged. Unlike ``physics_loss`` it matches
    spreads, tails and correlations, not only means.
    """
    if statistic not in DIST_STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(DIST_STATISTICS)}, got {statistic!r}")
    order, parts = energy_groups(energy, groups)
    real = real.float()
    mean, scale = real.mean(0).detach(), real.std(0).detach().clamp_min(min_scale)
    f, r = (fake.float()[order] - mean) / scale, (real[order] - mean) / scale
    dirs = torch.randn(f.shape[1], projections, device=f.device)
    dirs = torch.cat([torch.eye(f.shape[1], device=f.device), dirs / dirs.norm(dim=0, keepdim=True)], 1)
    return torch.stack([_projected_distance(f[idx] @ dirs, r[idx] @ dirs, statistic) for idx in parts]).mean()


def layer_centroids(images: torch.Tensor, xscale: float, xpower: float, floor_gev: float = 1e-3) -> torch.Tensor:
    """Per-layer energy-weighted x and y centroids (N, 2Z), in cells from the window centre, of showers in the
    training representation ((xscale * E_cell) ** xpower). ``floor_gev`` is added to every layer's energy, so an
    empty layer sits at the centre and a faint one near it instead of anywhere. Computed in fp32."""
    e = images.float().clamp_min(0).pow(1.0 / xpower)
    layer = e.sum((1, 2)) + xscale * floor_gev  # (N, Z)
    cols = []
    for axis_sum in (e.sum(2), e.sum(1)):  # (N, X, Z) and (N, Y, Z)
        size = axis_sum.shape[1]
        idx = torch.arange(size, device=e.device, dtype=e.dtype).view(1, -1, 1) - (size - 1) / 2
        cols.append((axis_sum * idx).sum(1) / layer)
    return torch.cat(cols, 1)


#: Smallest per-layer centroid spread (cells) the centroid term standardises by: layers that are empty in almost
#: every real shower have no spread to speak of, and must not turn a tiny offset into a huge loss.
CENTROID_MIN_SCALE = 0.05


def centroid_loss(fake_centroids: torch.Tensor, real_centroids: torch.Tensor, energy: torch.Tensor, groups: int,
                  projections: int = 32, statistic: str = "wasserstein") -> torch.Tensor:
    """Energy-conditioned distribution distance of the per-layer centroids (``layer_centroids``): the
    ``sliced_distance`` of the fakes' against the real batch's. A generator whose layers sit off the axis, or
    wander more or less than the MC's from shower to shower, is told apart by a classifier on these alone, while
    the shower-level barycentres of the physics features average the offsets away."""
    return sliced_distance(fake_centroids, real_centroids, energy, groups, projections, CENTROID_MIN_SCALE, statistic)


#: Centre (GeV) and steepness of the soft step that counts a cell in ``layer_occupancy``: just under the MC's readout
#: threshold (half a MIP, 9.69e-5 GeV), where a read-out cell counts 0.86 or more and one at 60 % of it 0.1.
OCCUPANCY_CENTRE_GEV = 8e-5
OCCUPANCY_STEEPNESS = 8.0
#: Smallest spread (of log1p counts) the occupancy term standardises by, for layers almost always empty.
OCCUPANCY_MIN_SCALE = 0.05


def layer_occupancy(images: torch.Tensor, xscale: float, xpower: float) -> torch.Tensor:
    """Soft number of read-out cells in each layer (N, Z) of showers in the training representation: each cell
    counts 1 / (1 + (c / E) ** k), a smooth step at ``OCCUPANCY_CENTRE_GEV`` (E/c computed from the
    representation, ``(x / (xscale * c) ** xpower) ** (1 / xpower)``), log1p-compressed. In fp32."""
    x = images.float().clamp_min(1e-12)
    centre = (xscale * OCCUPANCY_CENTRE_GEV) ** xpower
    step = torch.sigmoid(OCCUPANCY_STEEPNESS / xpower * torch.log(x / centre))
    return torch.log1p(step.sum((1, 2)))


def occupancy_loss(fake_occupancy: torch.Tensor, real_occupancy: torch.Tensor, energy: torch.Tensor, groups: int,
                   projections: int = 32, statistic: str = "wasserstein") -> torch.Tensor:
    """Energy-conditioned distribution distance of the per-layer cell counts (``layer_occupancy``): the
    ``sliced_distance`` of the fakes' against the real batch's. The count term matches the cells of whole
    showers only; a generator can fire too few cells in the front layers and too many at the back and still
    match them (the step-17800 generator fired 0.2-0.4x the MC's cells in layer 0 and 1.7-1.9x in layer 24 above
    200 GeV), which a classifier on cells per layer sees at once."""
    return sliced_distance(fake_occupancy, real_occupancy, energy, groups, projections, OCCUPANCY_MIN_SCALE,
                           statistic)


#: Edges (GeV) of the cell-spectrum term's soft bins: quarter decades from the MC's readout threshold (9.7e-5 GeV)
#: to 3 GeV, which hold the MC's single-particle peak at 0.3-0.5 MeV and its hottest cells.
SPECTRUM_EDGES_GEV = tuple(10.0 ** (-4 + k / 4) for k in range(19))
#: Steepness of each soft bin edge per unit of ln(E): 10-90 % within +-0.06 decades of the edge.
SPECTRUM_STEEPNESS = 16.0


def cell_spectrum(images: torch.Tensor, xscale: float, xpower: float) -> torch.Tensor:
    """Soft per-shower cell-energy spectrum (N, len(SPECTRUM_EDGES_GEV) - 1) of showers in the training
    representation: the number of cells in each quarter-decade bin, each edge a sigmoid in ln(E) (fp32)."""
    x = images.float().flatten(1).clamp_min(1e-12)
    above = torch.stack([torch.sigmoid(SPECTRUM_STEEPNESS / xpower * torch.log(x / (xscale * t) ** xpower)).sum(1)
                         for t in SPECTRUM_EDGES_GEV], 1)
    return above[:, :-1] - above[:, 1:]


def spectrum_loss(fake_spectrum: torch.Tensor, real_spectrum: torch.Tensor, energy: torch.Tensor, groups: int,
                  statistic: str = "absolute") -> torch.Tensor:
    """Mismatch of the energy-conditioned mean cell spectra (``cell_spectrum``): in each energy group,
    |ln(1 + <n_fake>) - ln(1 + <n_real>)| per bin, averaged over bins and groups. The count term's thresholds are
    a decade apart and the distribution term reads only the hottest cells, so neither sees what validation's cell
    spectrum does: the MC's peak of cells at 0.3-0.5 MeV (one or two particles crossing the silicon), where the
    step-51500 generator put 0.35-0.45x the MC's cells and 6-9x at the readout threshold instead."""
    order, parts = energy_groups(energy, groups)
    f, r = fake_spectrum.float()[order], real_spectrum.float()[order]
    return torch.stack([mean_abs_error(f[idx], torch.log1p(r[idx].mean(0)), lambda m, t: torch.log1p(m) - t,
                                       statistic).mean() for idx in parts]).mean()


#: Floor added to every mean profile bin in ``profile_loss``, as a fraction of the real batch's faintest cell: a
#: bin that no real shower of a group reaches compares against a tenth of a read-out cell, not against zero.
PROFILE_FLOOR_FRACTION = 0.1


def profile_loss(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, xpower: float,
                 groups: int, statistic: str = "absolute") -> torch.Tensor:
    """Mismatch of the energy-conditioned mean x, y, z energy profiles, every position alike: in each energy group,
    |ln(<p_fake> + f) - ln(<p_real> + f)| averaged over the 25 + 25 + 25 positions, the batch-level, symmetric form
    of the 3DGAN profile metric (``validate.profiles_metric``: mean relative error per position). The fakes are read
    out first at the real batch's faintest cell (the MC's readout threshold; straight-through, so a faint cell can
    still be raised), as validation sees them; f is ``PROFILE_FLOOR_FRACTION`` of that cell. ``physics_loss``
    matches normalised profiles in L1, where the lateral tails and the first layers (1e-4 of the energy, a quarter
    of the positions of the metric) weigh nothing."""
    real = real.float()
    raw_floor = faintest_cell(real)
    ef = read_out_energy(fake, raw_floor, xpower)
    er = real.clamp_min(0).pow(1.0 / xpower)
    floor = (PROFILE_FLOOR_FRACTION * raw_floor.pow(1.0 / xpower)).clamp_min(1e-12)
    order, parts = energy_groups(energy, groups)
    pf = torch.cat([ef.sum(axes) for axes in ((2, 3), (1, 3), (1, 2))], 1)[order]
    pr = torch.cat([er.sum(axes) for axes in ((2, 3), (1, 3), (1, 2))], 1)[order]
    return torch.stack([mean_abs_error(pf[idx], (pr[idx].mean(0) + floor).log(), lambda m, t: (m + floor).log() - t,
                                       statistic).mean() for idx in parts]).mean()


def faintest_cell(real: torch.Tensor) -> torch.Tensor:
    """The real batch's faintest non-zero cell (0-d, training representation): the MC's readout threshold as the
    data show it; 0 for a batch without a hit."""
    floor = real.float().masked_fill(real <= 0, float("inf")).amin()
    return torch.where(torch.isfinite(floor), floor, torch.zeros_like(floor))


def read_out_energy(fake: torch.Tensor, raw_floor: torch.Tensor, xpower: float) -> torch.Tensor:
    """Cell energies (xscale * GeV, fp32) of generated showers read out at ``raw_floor``: cells below it give 0 in
    the forward pass, as in the MC, and their gradient as if kept (straight-through, after the power, so a raised
    faint cell has one)."""
    fake = fake.float()
    e = fake.clamp_min(0).pow(1.0 / xpower)
    return e - (e * (fake < raw_floor)).detach()


def layer_shapes(energy_cells: torch.Tensor, xscale: float, floor_gev: float = 1e-3) -> torch.Tensor:
    """Per-layer lateral shape (N, 3Z) of cell energies (N, X, Y, Z) in xscale * GeV: the energy-weighted x and y
    widths and mean distance from the window's axis, in cells, as validation measures them (``width_x``,
    ``width_y``, ``ec_r``). ``floor_gev`` is added to every layer's energy, so an empty layer reads near 0."""
    e = energy_cells.float()
    n, nx, ny, nz = e.shape
    layer = e.sum((1, 2)) + xscale * floor_gev  # (N, Z)
    cols = []
    for axis_sum, size in ((e.sum(2), nx), (e.sum(1), ny)):  # (N, X, Z) and (N, Y, Z)
        idx = torch.arange(size, device=e.device, dtype=e.dtype).view(1, -1, 1) - (size - 1) / 2
        mu = (axis_sum * idx).sum(1) / layer
        cols.append(torch.sqrt(((axis_sum * idx**2).sum(1) / layer - mu**2).clamp_min(0) + 1e-4))
    ix = torch.arange(nx, device=e.device, dtype=e.dtype) - (nx - 1) / 2
    iy = torch.arange(ny, device=e.device, dtype=e.dtype) - (ny - 1) / 2
    r = torch.sqrt(ix.view(-1, 1) ** 2 + iy.view(1, -1) ** 2).view(1, nx, ny, 1)
    cols.append((e * r).sum((1, 2)) / layer)
    return torch.cat(cols, 1)


#: Smallest per-layer spread (cells) the shape term standardises by, for layers almost always empty.
SHAPE_MIN_SCALE = 0.05


def shape_loss(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, xscale: float, xpower: float,
               groups: int, projections: int = 32, statistic: str = "wasserstein") -> torch.Tensor:
    """Energy-conditioned distribution distance of the per-layer lateral shapes of read-out cells (``layer_shapes``
    of the fakes read out at the real batch's faintest cell, ``read_out_energy``): their ``sliced_distance``
    against the real batch's. The physics features' widths count every generated cell; validation counts read-out
    cells only, and its per-layer widths and radii carried most of the separation power that a generator firing
    the MC's number of cells per layer (``occupancy_loss``) lost (docs/training.md, thirteenth ablation)."""
    real = real.float()
    fake_shapes = layer_shapes(read_out_energy(fake, faintest_cell(real), xpower), xscale)
    real_shapes = layer_shapes(real.clamp_min(0).pow(1.0 / xpower), xscale)
    return sliced_distance(fake_shapes, real_shapes, energy, groups, projections, SHAPE_MIN_SCALE, statistic)


#: Floor (GeV) added to every layer's read-out energy before the log in ``layer_depth``: a tenth of a read-out cell,
#: so an empty layer reads -5 and a layer with one faint cell about -4.
DEPTH_FLOOR_GEV = 1e-5


def profile_moments(profile: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy-weighted mean position and width (square root of the variance, plus 1e-4 inside the root so its
    gradient stays finite) of profiles (N, L) along their bins, in bins from the first: validation's 3DGAN moments
    mu and sqrt(sigma2) of one axis."""
    total = profile.sum(1).clamp_min(1e-9)
    idx = torch.arange(profile.shape[1], device=profile.device, dtype=profile.dtype).view(1, -1)
    mu = (profile * idx).sum(1) / total
    var = (profile * (idx - mu.view(-1, 1)) ** 2).sum(1) / total
    return mu, torch.sqrt(var + 1e-4)


def layer_depth(energy_cells: torch.Tensor, xscale: float) -> torch.Tensor:
    """Per-shower longitudinal development (N, Z + 2) of cell energies (N, X, Y, Z) in xscale * GeV: log10 of each
    layer's energy in GeV (plus ``DEPTH_FLOOR_GEV``), and the energy-weighted mean depth and depth spread (standard
    deviation), in layers, as validation measures them (``log10_E_layer``, ``mu_z``, sqrt of ``sigma2_z``)."""
    layer = energy_cells.float().sum((1, 2)) / xscale  # (N, Z) GeV
    mu, width = profile_moments(layer)
    return torch.cat([torch.log10(layer + DEPTH_FLOOR_GEV), mu.view(-1, 1), width.view(-1, 1)], 1)


#: Smallest spread the depth term standardises by (log10 GeV or layers), for layers almost always empty.
DEPTH_MIN_SCALE = 0.05


def depth_loss(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, xscale: float, xpower: float,
               groups: int, projections: int = 32, statistic: str = "wasserstein") -> torch.Tensor:
    """Energy-conditioned distribution distance of the longitudinal development of read-out showers
    (``layer_depth`` of the fakes read out at the real batch's faintest cell): their ``sliced_distance``
    against the real batch's. The MC's showers start early or late from one shower to the next; at 10-60 GeV the
    step-31594 generator's mean depth ranged over 0.84 layers (16-84 %) where the MC's ranged over 2.28, and its
    first layers held energy where the MC's were often empty: the largest separation-power terms left
    (docs/training.md, fourteenth ablation). The physics features carry these too, as 27 of about 110 columns."""
    real = real.float()
    fake_depth = layer_depth(read_out_energy(fake, faintest_cell(real), xpower), xscale)
    real_depth = layer_depth(real.clamp_min(0).pow(1.0 / xpower), xscale)
    return sliced_distance(fake_depth, real_depth, energy, groups, projections, DEPTH_MIN_SCALE, statistic)


def shower_tilt(images: torch.Tensor, xpower: float) -> torch.Tensor:
    """Per-shower tilt (N,) of showers in the training representation: the slope of x against depth, in cells per
    layer, of the energy-weighted line fit through every cell (validation's ``theta_estimate`` fits the same line
    through the layer barycentres, in mm). Unlike the 3DGAN's per-layer ``ecal_angle`` it divides by no single
    layer's energy, so a faint back layer cannot blow its gradient up (that head killed a generator within 12 steps
    when it drove the angle term). 0 for an empty shower. In fp32."""
    e = images.float().clamp_min(0).pow(1.0 / xpower)  # (N, X, Y, Z)
    nx, nz = e.shape[1], e.shape[3]
    ex, ez = e.sum((2, 3)), e.sum((1, 2))  # (N, X), (N, Z)
    total = ez.sum(1).clamp_min(1e-12)
    ix = torch.arange(nx, device=e.device, dtype=e.dtype)
    iz = torch.arange(nz, device=e.device, dtype=e.dtype)
    x_bar, z_bar = (ex @ ix) / total, (ez @ iz) / total
    exz = (e.sum(2) * (ix.view(-1, 1) * iz.view(1, -1))).sum((1, 2)) / total  # E[x z]
    var_z = (ez @ iz**2) / total - z_bar**2
    return (exz - x_bar * z_bar) / var_z.clamp_min(1e-6)


def shower_lateral(energy_cells: torch.Tensor) -> torch.Tensor:
    """Per-shower lateral moments (N, 4) of cell energies (N, X, Y, Z), any unit: the energy-weighted x and y
    barycentres and widths (square roots of the variances) of the whole shower, in cells, as validation measures
    them (``mu_x``, ``mu_y`` and the square roots of ``sigma2_x``, ``sigma2_y``)."""
    e = energy_cells.float()
    (mu_x, width_x), (mu_y, width_y) = profile_moments(e.sum((2, 3))), profile_moments(e.sum((1, 3)))
    return torch.stack([mu_x, mu_y, width_x, width_y], 1)


#: Smallest spread (cells) the lateral term standardises by: the MC's shower widths vary by about 0.05 cells.
LATERAL_MIN_SCALE = 0.01


def lateral_loss(fake: torch.Tensor, real: torch.Tensor, energy: torch.Tensor, xpower: float, groups: int,
                 projections: int = 32, statistic: str = "wasserstein") -> torch.Tensor:
    """Energy-conditioned distribution distance of the lateral moments of read-out showers (``shower_lateral`` of
    the fakes read out at the real batch's faintest cell): their ``sliced_distance`` against the real batch's. At
    step 36142 the shower widths (sigma2_x, sigma2_y) and barycentres (mu_x, mu_y) were the largest separation-power
    terms: the MC's widths vary little from shower to shower and the generator's 2-3x as much, its barycentres
    half as much. The physics features carry them as 4 of about 110 columns, too few to be felt."""
    real = real.float()
    fake_lat = shower_lateral(read_out_energy(fake, faintest_cell(real), xpower))
    real_lat = shower_lateral(real.clamp_min(0).pow(1.0 / xpower))
    return sliced_distance(fake_lat, real_lat, energy, groups, projections, LATERAL_MIN_SCALE, statistic)


def readout_cut(images: torch.Tensor, raw_threshold: float) -> torch.Tensor:
    """Generated showers through the detector's readout threshold (given in the training representation): cells
    below it read 0 in the forward pass, as in the MC, while gradients reach every cell (straight-through), so a
    loss that wants more cells hit can still raise a faint one above the threshold."""
    below = images < raw_threshold
    return images - (images * below).detach()
