"""The cell-energy map (models.cellmap): fitted on toy showers whose cell spectra differ, it must give the generated
showers the reference's cells per shower and spectrum, keep every shower's visible energy and each shower's cell
ranking, and travel with the spec through every decoding."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from caloquant.errors import ModelError
from caloquant.models import DEFAULT_SPECS, ModelSpec
from caloquant.models.cellmap import CellMap, fit_cell_map, region_index

THR = 1e-4
SHAPE = (8, 8, 8)


def toy(n: int, seed: int, *, mu: float, sigma: float, occupancy: float) -> np.ndarray:
    """Showers of log-normal cells scaled by a per-shower energy (1-10), a fraction ``occupancy`` of cells lit."""
    rng = np.random.default_rng(seed)
    energy = rng.uniform(1.0, 10.0, (n, 1, 1, 1))
    cells = np.exp(rng.normal(mu, sigma, (n, *SHAPE))) * energy
    cells[rng.random((n, *SHAPE)) > occupancy] = 0.0
    return cells.astype(np.float32)


def read_out(cells: np.ndarray) -> np.ndarray:
    out = cells.copy()
    out[out < THR] = 0.0
    return out


@pytest.fixture(scope="module")
def fitted() -> tuple[CellMap, np.ndarray, np.ndarray]:
    """Map from a generator with too few, too hot cells to a reference with more, fainter ones; held-out samples."""
    gen_fit = toy(2000, 1, mu=np.log(8e-5), sigma=2.1, occupancy=1.0)  # same visible energy, 0.85x the cells
    ref_fit = read_out(toy(2000, 2, mu=np.log(3e-4), sigma=1.4, occupancy=0.9))
    cmap = fit_cell_map(gen_fit, ref_fit, THR, bands=3, knots=128)
    gen = toy(2000, 3, mu=np.log(8e-5), sigma=2.1, occupancy=1.0)
    ref = read_out(toy(2000, 4, mu=np.log(3e-4), sigma=1.4, occupancy=0.9))
    return cmap, gen, ref


def test_map_gives_generated_showers_the_reference_cell_count_and_spectrum(fitted) -> None:
    cmap, gen, ref = fitted
    mapped = cmap.apply(gen, THR)
    before, after, want = ((x > 0).sum((1, 2, 3)).mean() for x in (read_out(gen), mapped, ref))
    assert abs(before / want - 1) > 0.1  # the toy generator is off to start with
    assert after == pytest.approx(want, rel=0.04)
    # the read-out cell spectrum: quantiles of all cells above threshold agree within a few per cent
    q = [0.1, 0.25, 0.5, 0.75, 0.9]
    got, exp = np.quantile(mapped[mapped > 0], q), np.quantile(ref[ref > 0], q)
    raw = np.quantile(gen[gen >= THR], q)
    assert np.max(np.abs(np.log(got / exp))) < 0.15
    assert np.max(np.abs(np.log(raw / exp))) > 0.4


def test_map_keeps_each_showers_visible_energy_and_cell_ranking_within_a_region(fitted) -> None:
    cmap, gen, _ = fitted
    mapped = cmap.apply(gen, THR)
    np.testing.assert_allclose(mapped.sum((1, 2, 3)), read_out(gen).sum((1, 2, 3)), rtol=2e-3)
    ring = region_index(SHAPE, cmap.ring_edges, cmap.depth_edges)
    for i in range(20):
        x, y = gen[i].ravel(), mapped[i].ravel()
        for r in np.unique(ring):
            lit = (y > 0) & (ring == r)
            order = np.argsort(x[lit], kind="stable")
            assert np.all(np.diff(y[lit][order]) >= -1e-9 * y.max())  # monotone within a shower's region
    assert np.all(mapped[mapped > 0] >= THR)


def test_map_of_a_sample_to_its_own_distribution_is_close_to_identity() -> None:
    ref = read_out(toy(2000, 5, mu=np.log(3e-4), sigma=1.4, occupancy=0.9))
    gen = toy(2000, 6, mu=np.log(3e-4), sigma=1.4, occupancy=0.9)
    cmap = fit_cell_map(gen, ref, THR, bands=2, knots=128)
    mapped = cmap.apply(gen, THR)
    mid = (gen > 1e-3) & (gen < 1e-1)
    assert np.median(np.abs(np.log(mapped[mid] / gen[mid]))) < 0.03


def test_spec_carries_the_map_and_decodes_through_it(fitted) -> None:
    cmap, gen, _ = fitted
    base = replace(DEFAULT_SPECS["ecal25"], cell_threshold_gev=THR)
    spec = replace(base, cell_map=cmap)
    again = ModelSpec.from_dict(spec.to_dict())
    assert again == spec and again.digest() == spec.digest() != base.digest()
    assert "cell_map" not in base.to_dict()  # older cards stay as they were
    plain = replace(base, cell_threshold_gev=0.0)
    raw = plain.to_training(gen)
    np.testing.assert_allclose(spec.to_physical(raw), cmap.apply(plain.to_physical(raw), THR), rtol=1e-6)
    with pytest.raises(ModelError, match="readout threshold"):
        replace(DEFAULT_SPECS["ecal25"], cell_map=cmap)


def test_decoding_keeps_a_broken_engines_nan_visible(fitted) -> None:
    """NaN output (a broken reduced-precision kernel) must reach the precision guard, map or no map."""
    cmap, gen, _ = fitted
    spec = replace(DEFAULT_SPECS["ecal25"], cell_threshold_gev=THR)
    raw = spec.to_training(gen[:4])
    raw[1, 2, 3, 4] = np.nan
    for decoding in (spec, replace(spec, cell_map=cmap)):
        out = decoding.to_physical(raw)
        assert np.isnan(out[1, 2, 3, 4]) and np.isfinite(np.delete(out, 1, axis=0)).all()


def test_malformed_maps_are_refused_with_one_line() -> None:
    band = ((-12.0, -11.0), (-12.0, -11.5))
    good = CellMap(-12.0, 0.1, (0.0, 1.0), (2.0,), (), (band, band))
    assert CellMap.from_dict(good.to_dict()) == good
    for kwargs, words in (({"table": (((-12.0, -13.0), (-12.0, -11.5)), band)}, "monotone"),
                          ({"centres": (1.0, 0.0)}, "increase"),
                          ({"ring_edges": (2.0, 3.0)}, "does not fit"),
                          ({"table": (((-12.0, -11.0), (-12.0,)), band)}, "ragged"),
                          ({"log_step": 0.0}, "finite")):
        with pytest.raises(ModelError, match=words):
            replace(good, **kwargs)
    d = good.to_dict()
    for bad in ({**d, "table_f32": d["table_f32"][:-4]}, {**d, "table_f32": "not base64!"},
                {**d, "table_shape": [2, 2, 3]}, {k: v for k, v in d.items() if k != "centres"}):
        with pytest.raises(ModelError, match="malformed"):
            CellMap.from_dict(bad)


def test_fit_refuses_too_few_showers_and_a_missing_threshold() -> None:
    gen = toy(50, 7, mu=np.log(2e-3), sigma=0.8, occupancy=0.6)
    with pytest.raises(ModelError, match="too few"):
        fit_cell_map(gen, read_out(gen), THR, bands=6)
    with pytest.raises(ModelError, match="threshold"):
        fit_cell_map(gen, gen, 0.0, bands=1)


def test_cellmap_command_writes_a_mapped_generator_every_command_loads(tmp_path, mc_small, capsys) -> None:
    pytest.importorskip("torch")
    from caloquant.cli import main
    from caloquant.data import write_showers
    from caloquant.models import load_generator, sample_showers

    mc = tmp_path / "mc.h5"
    write_showers(mc, mc_small)
    out = tmp_path / "mapped.pt"
    assert main(["cellmap", "ecal25", "--data", str(mc), "-o", str(out), "--n", "160", "--bands", "2"]) == 0
    assert "read-out cells per shower" in capsys.readouterr().out
    gen = load_generator(out)
    assert gen.spec.cell_map is not None and gen.spec.cell_threshold_gev > 0
    shipped = load_generator("ecal25")
    e = mc_small.energy[:40]
    mapped = sample_showers(gen.module, gen.spec, e, None, seed=5)
    plain = sample_showers(shipped.module, shipped.spec, e, None, seed=5)
    np.testing.assert_allclose(mapped.sum((1, 2, 3)), plain.sum((1, 2, 3)), rtol=1e-3)  # energy response kept
    want = (mc_small.ecal >= gen.spec.cell_threshold_gev).sum((1, 2, 3)).mean()
    got, before = ((x > 0).sum((1, 2, 3)).mean() for x in (mapped, plain))
    assert abs(got / want - 1) < abs(before / want - 1)
    # refused: an existing output, a name that is not .pt, a model without a readout threshold
    assert main(["cellmap", "ecal25", "--data", str(mc), "-o", str(out), "--n", "160", "--bands", "2"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["cellmap", "ecal25", "--data", str(mc), "-o", str(tmp_path / "m.h5")]) == 2
    assert ".pt" in capsys.readouterr().err


def test_cellmap_command_needs_a_readout_threshold(tmp_path, mc_small, gan_checkpoint, capsys) -> None:
    from caloquant.cli import main
    from caloquant.data import write_showers

    mc = tmp_path / "mc.h5"
    write_showers(mc, mc_small)
    assert main(["cellmap", str(gan_checkpoint), "--data", str(mc), "-o", str(tmp_path / "m.pt"), "--n", "160"]) == 2
    err = capsys.readouterr().err
    assert "readout threshold" in err and "Traceback" not in err
    assert not (tmp_path / "m.pt").exists()
