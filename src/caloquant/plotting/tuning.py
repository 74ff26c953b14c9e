"""The tuning report: speed-vs-degradation scatter with its Pareto front, per-layer sensitivity and latency
bars, the candidate table and (for generators) physics plots of FP32, tuned, full INT8 and reference MC.

It draws the tuner's summary as given (``TuneResult.summary()``, Pareto indices included)."""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from caloquant.plotting.figures import hep_style, new_figure
from caloquant.plotting.report import figure_html, write_page


def scatter(summary: dict[str, Any]) -> Figure:
    """Throughput vs metric degradation of every candidate (95 % upper bound as error bar), Pareto front."""
    cands = summary["candidates"]
    speed = [c["throughput"] for c in cands]
    deg = [c["degradation"] for c in cands]
    with hep_style():
        fig = new_figure(8, 5)
        ax = fig.add_subplot()
        for c in cands:
            colour = "tab:green" if c["passed"] else "tab:red"
            ax.errorbar(c["throughput"], c["degradation"], yerr=[[0], [max(c["upper95"] - c["degradation"], 0)]],
                        fmt="o", color=colour, ms=5, capsize=2)
            ax.annotate(f"{c['index']} {c['kind']}", (c["throughput"], c["degradation"]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
        front = summary["pareto"]
        ax.plot([speed[i] for i in front], [deg[i] for i in front], "k--", lw=1, label="Pareto front")
        ax.axhline(summary["allowed"], color="tab:orange", lw=1, label="tolerance")
        ax.axhspan(-summary["noise_floor"], summary["noise_floor"], color="grey", alpha=0.2, label="noise floor")
        ax.set_xlabel(f"throughput at batch {summary['batch']} (items/s)")
        ax.set_ylabel(f"{summary['metric']} degradation vs FP32")
        ax.legend(fontsize=8)
    return fig


def layer_bars(layers: Sequence[dict[str, Any]]) -> Figure:
    """Per-layer time per batch in FP32/INT8/BF16 and per-layer sensitivity (measured or estimated)."""
    names = [d["name"] for d in layers]
    x = np.arange(len(names))
    with hep_style():
        fig = new_figure(11, 5)
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        for k, (key, label) in enumerate((("t_fp32", "FP32"), ("t_int8", "INT8"), ("t_bf16", "BF16"))):
            ax1.bar(x + (k - 1) * 0.27, [1e3 * d[key] for d in layers], 0.27, label=label)
        ax1.set_ylabel("ms per batch (PERF_COUNT)")
        ax1.legend(fontsize=8)
        ax2.bar(x, [d["sensitivity"] for d in layers],
                color=["tab:blue" if d["sensitivity_measured"] else "tab:gray" for d in layers])
        ax2.set_ylabel("degradation removed by reverting (grey: estimated)")
        for ax in (ax1, ax2):
            ax.set_xticks(x, [n[-28:] for n in names], rotation=60, ha="right", fontsize=7)
    return fig


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _table(summary: dict[str, Any]) -> str:
    rows = ["<table><tr><th>#</th><th>kind</th><th>calibration</th><th>INT8 layers</th><th>metric &plusmn; err</th>"
            "<th>degradation &plusmn; err</th><th>95% UB</th><th>noise floor</th><th>verdict</th>"
            "<th>items/s</th><th>ms/batch</th></tr>"]
    n_layers = len(summary["layers"])
    for c in summary["candidates"]:
        cal = c["calibration"]
        word = "<span class='pass'>pass</span>" if c["passed"] else "<span class='fail'>fail</span>"
        if c["index"] == summary["best"]:
            word += " (chosen)"
        rows.append(
            f"<tr><td>{c['index']}</td><td>{html.escape(c['kind'])}</td><td>{cal['range']} "
            f"{'per-channel' if cal['per_channel'] else 'per-tensor'}{' +bias corr.' if cal['bias_correction'] else ''}"
            f"</td><td>{len(c['int8'])}/{n_layers}</td><td>{_fmt(c['metric'])} &plusmn; {_fmt(c['metric_error'])}</td>"
            f"<td>{_fmt(c['degradation'])} &plusmn; {_fmt(c['degradation_error'])}</td><td>{_fmt(c['upper95'])}</td>"
            f"<td>{_fmt(summary['noise_floor'])}</td><td>{word}</td><td>{c['throughput']:.1f}</td>"
            f"<td>{c['latency_ms']:.1f}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def write_tuning_report(summary: dict[str, Any], path: str | os.PathLike[str],
                        physics: Sequence[tuple[str, Figure]] = (), *, dpi: int = 90) -> Path:
    """Write the self-contained HTML tuning report (atomically) and return its path."""
    figs = [("Throughput vs metric degradation and its Pareto front (error bar: 95% upper bound)", scatter(summary)),
            ("Per-layer latency and sensitivity", layer_bars(summary["layers"])), *physics]
    extra = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in summary.get("context", {}).items())
    parts = ["<h1>caloquant quantize</h1>",
             f"<p>Criterion: {html.escape(summary['criterion'])}; FP32 {html.escape(summary['metric'])} = "
             f"{_fmt(summary['baseline_metric'])} (noise floor {_fmt(summary['noise_floor'])}, bootstrap spread "
             f"of the FP32 value); allowed degradation {_fmt(summary['allowed'])}. A candidate passes when the 95% "
             "paired-bootstrap upper bound of its degradation is within the allowed value.</p>",
             f"<ul><li>accepted: {summary['accepted']} (candidate {summary['best']}), speed-up vs OpenVINO FP32 "
             f"{summary['speedup_vs_fp32']:.2f}x, vs full INT8 {summary['speedup_vs_full_int8']:.2f}x</li>"
             f"<li>{len(summary['candidates'])} candidates in {summary['minutes']:.2f} min; stop: "
             f"{html.escape(summary['stop_reason'])}</li>{extra}</ul>", _table(summary)]
    parts += [figure_html(title, fig, dpi=dpi) for title, fig in figs]
    return write_page(path, "caloquant quantize", parts)
