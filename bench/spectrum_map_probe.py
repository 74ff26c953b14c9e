"""Probe (issue 23): would a fitted monotone map of cell energies fix a generator's cell spectrum?

A global, count-matched quantile map g(x) = S_mc^-1(S_gen(x)), where S(x) is the mean number of read-out cells per
shower above x: fitted on MC showers independent of the comparison sample and on the first 4,000 generated
showers, applied to every read-out cell of the generated sample (cells mapped below the readout threshold read 0).
Writes the mapped sample; judge it with `caloquant validate REF MAPPED --json ...`. A prototype of an output stage,
not part of any model.

    python bench/spectrum_map_probe.py runs/val/NAME.h5 scratch/campaign-data/ecal25-val.h5 runs/val/NAME-map.h5
"""
import sys
import h5py
import numpy as np

THR = 9.68864e-05
gen_path, mc_fit, out = sys.argv[1], sys.argv[2], sys.argv[3]
grid = np.logspace(np.log10(THR), 1.0, 2000)  # energies (GeV) where survival counts are compared


def survival(path, n=None):
    """Mean number of cells per shower above each grid energy."""
    with h5py.File(path, "r") as f:
        x = f["ECAL"][:n]
    v = np.sort(x[x > THR].ravel())
    return (len(v) - np.searchsorted(v, grid, side="right")) / len(x), len(x)


s_gen, _ = survival(gen_path, 4000)
s_mc, _ = survival(mc_fit)
# g(x) = S_mc^-1(S_gen(x)): a generated cell keeps its rank among cells per shower; both S are non-increasing
target = s_gen  # counts per shower above x for generated cells
order = np.argsort(s_mc)  # S_mc inverted by interpolation on its (non-increasing) values
mapped = np.interp(target, s_mc[order], grid[order], left=grid[-1], right=0.0)
mapped = np.where(target > s_mc[0], 0.0, mapped)  # more generated cells than MC ones above threshold: below it
mapped = np.maximum.accumulate(mapped)  # monotone
with h5py.File(gen_path, "r") as f, h5py.File(out, "w") as g:
    for k in f:
        if k != "ECAL":
            g.create_dataset(k, data=f[k][:])
    x = f["ECAL"][:]
    on = x > THR
    y = np.zeros_like(x)
    y[on] = np.interp(np.log(x[on]), np.log(grid), mapped)
    y[y <= THR] = 0.0
    g.create_dataset("ECAL", data=y, compression="gzip", compression_opts=1)
    e0, e1 = x.sum((1, 2, 3)), y.sum((1, 2, 3))
    print(f"visible energy mapped / generated: {np.mean(e1 / e0):.4f}; cells hit {on.sum() / len(x):.0f} -> "
          f"{(y > 0).sum() / len(x):.0f} per shower")
for e in (2e-4, 4e-4, 1e-3, 3e-3, 1e-2, 1e-1):
    print(f"g({e:.0e}) = {np.interp(np.log(e), np.log(grid), mapped):.3e}")
