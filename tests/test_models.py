"""3DGAN architectures: shapes and parameter counts against the reference tables (gan3d.md section 1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from caloquant.errors import ModelError
from caloquant.models import (
    DEFAULT_SPECS,
    AngleDiscriminator,
    AngleGenerator,
    EcalEnergyDiscriminator,
    EcalEnergyGenerator,
    ModelSpec,
    build_generator,
    calibrate_batchnorm,
    count_parameters,
    load_generator,
    shower_noise,
)
from caloquant.models.entry import entry_offsets
from caloquant.models.layers import EntryShift


@pytest.mark.parametrize(
    ("module", "total", "trainable"),
    [
        (EcalEnergyGenerator, 872_948, 872_808),
        (EcalEnergyDiscriminator, 73_450, 73_402),
        (AngleGenerator, 1_365_047, 1_364_983),
        (AngleDiscriminator, 87_402, 87_354),
    ],
)
def test_parameter_counts_match_reference(module: type, total: int, trainable: int) -> None:
    m = module()
    assert count_parameters(m) == total
    assert count_parameters(m, include_buffers=False) == trainable


def test_output_shapes() -> None:
    with torch.no_grad():
        g = EcalEnergyGenerator().eval()
        x = g(torch.randn(3, 200))
        assert x.shape == (3, 25, 25, 25) and bool((x >= 0).all())
        out = EcalEnergyDiscriminator().eval()(x)
        assert {k: tuple(v.shape) for k, v in out.items()} == {"logit": (3,), "energy": (3,), "ecal": (3,)}
        ga = AngleGenerator().eval()
        xa = ga(torch.randn(2, 256))
        assert xa.shape == (2, 51, 51, 25)
        outa = AngleDiscriminator().eval()(xa)
        assert {k: tuple(v.shape) for k, v in outa.items()} == {"logit": (2,), "energy": (2,), "ecal": (2,)}


def test_ecal_sum_head_undoes_power() -> None:
    img = torch.rand(2, 25, 25, 25)
    out = EcalEnergyDiscriminator(power=0.85).eval()(img.pow(0.85))
    assert torch.allclose(out["ecal"], img.flatten(1).sum(1), rtol=1e-4)


def test_a_new_angle_gain_leaves_the_generator_computing_the_same() -> None:
    """``regain_angle_input`` refits the dense layer for another angle gain (0: theta as is, the Keras model) and
    the generator's showers stay the same; the gain is part of the spec, and a spec without one keeps its digest."""
    from caloquant.models.gan3d import AngleGenerator, regain_angle_input
    from caloquant.models.spec import ModelSpec

    torch.manual_seed(0)
    gen = AngleGenerator().eval()
    z = torch.randn(4, 256)
    z[:, 1] = torch.tensor([1.1, 1.5, 1.7, 2.0])
    before = gen(z).detach()
    opt = torch.optim.RMSprop(gen.parameters())
    gen(z).sum().backward()
    opt.step()
    with torch.no_grad():
        after_step = gen(z)
        square = opt.state[gen.dense.weight]["square_avg"].clone()
        for gain in (100.0, 7.0, 0.0):
            regain_angle_input(gen, gain, opt if gain == 100.0 else None)
            assert gen.angle_gain == gain
            assert torch.allclose(gen(z), after_step, rtol=1e-4, atol=1e-5), gain
    assert not torch.equal(before, after_step)
    assert torch.allclose(opt.state[gen.dense.weight]["square_avg"][:, 1], square[:, 1] * 100.0**2)
    assert torch.equal(opt.state[gen.dense.weight]["square_avg"][:, 0], square[:, 0])
    spec = ModelSpec(arch="angle51", angle_gain=100.0)
    assert ModelSpec.from_dict(spec.to_dict()).angle_gain == 100.0
    assert "angle_gain" not in ModelSpec(arch="angle51").to_dict()
    with pytest.raises(ModelError, match="angle gain"):
        ModelSpec(arch="ecal25", angle_gain=1.0)


def test_noise_energy_scales_the_angle_models_noise_and_leaves_the_rest() -> None:
    """noise_energy_gev E0: the angle model's noise columns are multiplied by E/E0 (at E = E0 they are the noise as
    drawn), E/100 and theta stay, and so do the entry offsets (functions of ratios of noise values); 0 leaves the
    noise and the spec's dict (and digest) as they were, and a model without an angle input refuses it."""
    plain, scaled = DEFAULT_SPECS["angle51"], ModelSpec(arch="angle51", noise_energy_gev=250.0)
    e, a = np.array([10.0, 250.0, 500.0]), np.array([60.0, 90.0, 120.0])
    noise = shower_noise(3, np.arange(3), plain.noise_size)
    zp, zs = plain.latent(e, a, noise), scaled.latent(e, a, noise)
    assert np.array_equal(zp[:, :2], zs[:, :2]) and np.array_equal(zp[:, 2:], noise)
    assert np.allclose(zs[:, 2:], noise * np.array([[0.04], [1.0], [2.0]]), rtol=1e-6)
    for u, v in zip(entry_offsets(zp, 0.35, 2, np), entry_offsets(zs, 0.35, 2, np)):
        assert np.allclose(u, v, atol=1e-6)
    assert ModelSpec.from_dict(scaled.to_dict()) == scaled and scaled.digest() != plain.digest()
    assert "noise_energy_gev" not in plain.to_dict()
    for bad in (ModelSpec(arch="ecal25").to_dict() | {"noise_energy_gev": 100.0},
                plain.to_dict() | {"noise_energy_gev": -1.0}):
        with pytest.raises(ModelError, match="noise energy"):
            ModelSpec.from_dict(bad)


def test_spec_latent_and_inverse_transform() -> None:
    spec = DEFAULT_SPECS["ecal25"]
    noise = shower_noise(7, np.arange(4), spec.noise_size)
    lat = spec.latent(np.array([100.0, 200.0, 50.0, 10.0]), None, noise)
    assert np.allclose(lat[1], 2.0 * noise[1]) and np.allclose(lat[3], 0.1 * noise[3])
    cells = np.array([0.0, 1e-4, 0.2], dtype=np.float32)
    assert np.allclose(spec.to_physical(spec.to_training(cells)), cells, rtol=1e-5)
    aspec = DEFAULT_SPECS["angle51"]
    lat = aspec.latent(np.array([100.0]), np.array([60.0]), shower_noise(1, np.arange(1), aspec.noise_size))
    assert lat.shape == (1, 256) and lat[0, 0] == pytest.approx(1.0) and lat[0, 1] == pytest.approx(np.pi / 3)


def test_noise_depends_only_on_seed_and_index() -> None:
    a = shower_noise(3, np.arange(10), 200)
    b = shower_noise(3, np.arange(5, 10), 200)
    assert np.array_equal(a[5:], b)
    assert not np.array_equal(a, shower_noise(4, np.arange(10), 200))


def test_extrapolation_refused() -> None:
    spec = DEFAULT_SPECS["ecal25"]
    with pytest.raises(Exception, match="outside the model's trained range"):
        spec.check_conditions(np.array([600.0]), None)
    spec.check_conditions(np.array([600.0]), None, allow_extrapolation=True)


def test_bad_weights_give_one_line_errors(tmp_path) -> None:
    from caloquant.models.registry import CHECKPOINT_FORMAT

    angle_ckpt = tmp_path / "angle.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "spec": DEFAULT_SPECS["angle51"].to_dict(),
                "generator": AngleGenerator().state_dict()}, angle_ckpt)
    with pytest.raises(ModelError, match="holds a angle51 model, expected ecal25"):
        load_generator(angle_ckpt, expect_arch="ecal25")
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "spec": DEFAULT_SPECS["ecal25"].to_dict(),
                "generator": AngleGenerator().state_dict()}, wrong)
    with pytest.raises(ModelError, match="do not fit this architecture"):
        load_generator(wrong)
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(angle_ckpt.read_bytes()[:5000])
    with pytest.raises(ModelError, match="not a readable PyTorch weights file"):
        load_generator(truncated)
    with pytest.raises(ModelError, match="unknown model"):
        load_generator("nosuchmodel")
    g = load_generator(angle_ckpt)
    assert g.spec.arch == "angle51" and isinstance(g.module, type(build_generator(g.spec)))


def _moved_showers(amplitude: float, n: int = 2000) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A fixed centred shower (raw representation, GeV = raw ** (1 / 0.85) / 100), its shifted copies and latents."""
    raw = torch.zeros(n, 25, 25, 25)
    raw[:, 11:14, 11:14, :] = 1.0
    raw[:, 12, 12, :] = 20.0
    z = torch.randn(n, 200, generator=torch.Generator().manual_seed(3)) * 2.5  # the ecal25 latent: noise x E/100
    return raw, EntryShift(amplitude, 0.85, first=0)(raw, z), z


def test_entry_shift_moves_each_shower_rigidly_by_a_uniform_offset_and_keeps_its_energy() -> None:
    """The MC's entry point falls uniformly within a cell: the stage moves every shower's barycentre by an offset
    uniform in +-amplitude, independent in x and y, without losing energy or changing the depth profile."""
    from scipy import stats

    raw, out, z = _moved_showers(0.5)
    gev_in, gev_out = raw ** (1 / 0.85), out ** (1 / 0.85)
    assert torch.allclose(gev_out.sum((1, 2, 3)), gev_in.sum((1, 2, 3)), rtol=1e-5)
    assert torch.allclose(gev_out.sum((1, 2)), gev_in.sum((1, 2)), rtol=1e-5)  # per layer too
    dx, dy = EntryShift(0.5, 0.85, first=0).offsets(z)
    pos = torch.arange(25.0)
    mu_x = (gev_out.sum((2, 3)) * pos).sum(1) / gev_out.sum((1, 2, 3)) - 12
    mu_y = (gev_out.sum((1, 3)) * pos).sum(1) / gev_out.sum((1, 2, 3)) - 12
    assert torch.allclose(mu_x, dx, atol=1e-4) and torch.allclose(mu_y, dy, atol=1e-4)
    for d in (dx, dy):
        assert stats.kstest(d.numpy() + 0.5, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(dx.numpy(), dy.numpy())[0, 1]) < 0.1
    # the offsets do not depend on the energy factor of the latent (ratio of two of its entries)
    assert torch.allclose(EntryShift(0.5, 0.85, first=0).offsets(z * 4.0)[0], dx, atol=1e-6)
    # a smaller amplitude moves less, none at all is the identity stage being absent
    assert EntryShift(0.2, 0.85, first=0).offsets(z)[0].abs().max() <= 0.2
    with pytest.raises(ValueError, match="amplitude"):
        EntryShift(1.5, 0.85, first=0)


def test_entry_shift_passes_finite_gradients_to_the_cells() -> None:
    """Empty cells (0 ** 0.85 has an infinite slope) must not poison the gradient of the shifted shower."""
    raw, _, z = _moved_showers(0.5, n=8)
    raw = raw.clone().requires_grad_(True)
    (EntryShift(0.5, 0.85, first=0)(raw, z) * torch.rand(8, 25, 25, 25)).sum().backward()
    assert raw.grad is not None and torch.isfinite(raw.grad).all()
    assert raw.grad[:, 12, 12].abs().min() > 0  # the core cells get gradient


def test_spec_entry_jitter_builds_the_stage_and_round_trips() -> None:
    spec = ModelSpec("ecal25", entry_jitter_cells=0.5)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    legacy = {k: v for k, v in spec.to_dict().items() if k != "entry_jitter_cells"}  # cards written before it
    assert ModelSpec.from_dict(legacy).entry_jitter_cells == 0.0
    with pytest.raises(ModelError, match="entry jitter"):
        ModelSpec("ecal25", entry_jitter_cells=2.0)
    torch.manual_seed(0)
    plain = build_generator(DEFAULT_SPECS["ecal25"]).eval()
    shifted = build_generator(spec).eval()
    assert shifted.state_dict().keys() == plain.state_dict().keys()  # no parameters: checkpoints unchanged
    shifted.load_state_dict(plain.state_dict())
    z = torch.from_numpy(shower_noise(7, np.arange(64), 200) * 2.0)
    with torch.no_grad():
        a, b, again = plain(z), shifted(z), shifted(z)
    assert torch.equal(b, again)  # deterministic per latent, so per shower seed
    assert not torch.allclose(a, b)
    assert torch.equal(b, EntryShift(0.5, 0.85, first=0)(a, z))  # the plain output, shifted by its own latent
    angle = build_generator(ModelSpec("angle51", energy_range=(10, 500), angle_range_deg=(60, 120),
                                      entry_jitter_cells=0.5))
    assert angle.entry is not None and angle.entry.first == 2  # after E/100 and theta


def test_calibrate_batchnorm_averages_the_training_batch_statistics() -> None:
    """Precise BN: running statistics become the plain average of the train-mode batch statistics over the
    calibration showers, whatever they were before; momentum and mode come back; the same seed, the same result."""
    spec = DEFAULT_SPECS["ecal25"]
    torch.manual_seed(0)
    gen = build_generator(spec).eval()
    norms = [m for m in gen.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    seen: list[list[torch.Tensor]] = [[] for _ in norms]
    for i, m in enumerate(norms):
        m.running_mean.fill_(5.0)
        m.running_var.fill_(10.0)
        m.register_forward_hook(lambda mod, args, out, i=i: seen[i].append(args[0].detach()))
    calibrate_batchnorm(gen, spec, 6, seed=4, batch=4)  # two whole batches of 4
    assert not gen.training and all(m.momentum == 0.01 for m in norms)
    for m, batches in zip(norms, seen):
        assert len(batches) == 2 and all(len(b) == 4 for b in batches)
        mean = torch.stack([b.mean((0, 2, 3, 4)) for b in batches]).mean(0)
        var = torch.stack([b.var((0, 2, 3, 4), unbiased=True) for b in batches]).mean(0)
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)
    first = {k: v.clone() for k, v in gen.state_dict().items()}
    calibrate_batchnorm(gen, spec, 6, seed=4, batch=4)
    assert all(torch.equal(first[k], v) for k, v in gen.state_dict().items() if v.is_floating_point())


def test_decoding_shifts_numpy_cells_as_the_torch_stage_does() -> None:
    """``models.entry`` is written once for NumPy and torch, and the fused decoding kernel (``models.decode``) moves
    each shower as the training graph's torch stage does, for either architecture's latent layout, keeping the
    energy inside."""
    from caloquant.models.entry import ENTRY_LATENT, shift_showers

    rng = np.random.default_rng(5)
    cells = rng.gamma(0.5, 1.0, (6, 25, 25, 25)).astype(np.float32)
    cells[:, :2] = cells[:, -2:] = cells[:, :, :2] = cells[:, :, -2:] = 0  # nothing near the edges to lose
    for arch, width in (("ecal25", 200), ("angle51", 256)):
        z = rng.standard_normal((6, width)).astype(np.float32)
        first = ENTRY_LATENT[arch]
        ref = shift_showers(torch.from_numpy(cells), torch.from_numpy(z), 0.5, first, torch).numpy()
        out = shift_showers(cells, z, 0.5, first, np)
        assert out.dtype == np.float32 and np.allclose(out, ref, rtol=1e-6, atol=1e-7)
        arch_spec = ModelSpec(arch, entry_jitter_cells=0.5)
        decoded = arch_spec.to_physical(arch_spec.to_training(cells), z)
        assert decoded.dtype == np.float32 and np.allclose(decoded, ref, rtol=2e-5, atol=1e-7)
        assert np.allclose(decoded.sum((1, 2, 3)), cells.sum((1, 2, 3)), rtol=1e-5)
        assert not np.allclose(decoded, cells, atol=1e-3)
    spec = ModelSpec("ecal25", entry_jitter_cells=0.5)
    with pytest.raises(ModelError, match="3 latent rows for 6 showers"):
        spec.to_physical(spec.to_training(cells), z[:3, :200])
