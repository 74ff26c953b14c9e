"""The demo's summary: a speed-vs-physics figure of the benchmark rows and the one-file HTML report
(summary table, stage times, tuner Pareto plot, validation tables and physics plots)."""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from caloquant.bench.compare import BenchResult
from caloquant.bench.tables import HEADER, cells
from caloquant.machine import describe_markdown
from caloquant.plotting.figures import hep_style, new_figure
from caloquant.plotting.report import figure_html, validation_parts, write_page
from caloquant.plotting.tuning import scatter
from caloquant.validate.suite import PairedResult, ValidationResult


def speed_vs_physics(result: BenchResult) -> Figure:
    """Showers/s (all streams, log scale) against the moment metric +- error of every measured row."""
    rows = [r for r in result.rows if not r.missing and r.metric is not None and r.showers_per_s_multistream]
    with hep_style():
        fig = new_figure(9, 5.5)
        ax = fig.add_subplot()
        colors = [matplotlib.colormaps["tab10"](i) for i in range(10)]
        for k, r in enumerate(rows):
            assert r.showers_per_s_multistream is not None and r.metric is not None
            ax.errorbar(r.showers_per_s_multistream, r.metric, yerr=r.metric_error, fmt="s" if r.key == "mc" else "o",
                        ms=7, capsize=3, label=r.name, color=colors[k % len(colors)])
        ax.set_xscale("log")
        ax.set_xlabel(f"showers/s, batch {result.settings['large_batch']}, {result.settings['cores']} streams")
        ax.set_ylabel("3DGAN moment metric vs reference MC (lower is better)")
        ax.set_title(f"{result.model}: speed and physics of each deployment", fontsize=12)
        ax.legend(fontsize=8)
    return fig


def _bench_table(result: BenchResult) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in HEADER)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(r)) + "</tr>" for r in result.rows)
    notes = "".join(f"<li>{html.escape(r.name)}: not measured: {html.escape(r.missing)}</li>"
                    for r in result.rows if r.missing)
    return (f"<table id='summary'><tr>{head}</tr>{body}</table>" + (f"<ul>{notes}</ul>" if notes else "")
            + f"<p>Machine: {html.escape(describe_markdown(result.machine))}</p>")


def _stages_table(times: Mapping[str, float]) -> str:
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{v:.1f}</td></tr>"
                   for k, v in times.items())
    return f"<table><tr><th>stage</th><th>wall time (s)</th></tr>{rows}<tr><th>total</th><th>" \
           f"{sum(times.values()):.1f}</th></tr></table>"


def _paired_table(paired: Mapping[str, PairedResult]) -> str:
    rows = "".join(f"<tr><td style='text-align:left'>{html.escape(k)}</td><td>{p.value_a:.4g}</td>"
                   f"<td>{p.value_b:.4g}</td><td>{p.value:+.4g} &plusmn; {p.error:.2g}</td>"
                   f"<td>{p.upper95:+.4g}</td></tr>"
                   for k, p in paired.items())
    return ("<table><tr><th>comparison</th><th>metric A</th><th>metric B</th><th>B - A &plusmn; error</th>"
            f"<th>95% upper bound</th></tr>{rows}</table>")


def write_demo_report(path: str | os.PathLike[str], *, bench: BenchResult, times: Mapping[str, float],
                      validation: ValidationResult, paired: Mapping[str, PairedResult],
                      tuning: Mapping[str, Any] | None, notes: Sequence[str] = (), dpi: int = 90) -> Path:
    """Write the demo report: one self-contained HTML file, every figure an embedded PNG."""
    parts = ["<h1>caloquant demo</h1>",
             f"<p>Model {html.escape(bench.model)}, {html.escape(bench.created)}. "
             + " ".join(html.escape(n) for n in notes) + "</p>",
             "<h2>Summary: every deployment side by side</h2>", _bench_table(bench),
             figure_html("Speed and physics of each deployment", speed_vs_physics(bench), dpi=dpi),
             "<h2>Stages</h2>", _stages_table(times)]
    if tuning is not None:
        best = tuning["candidates"][tuning["best"]]
        parts.append(f"<h2>Tuner</h2><p>{'Accepted' if tuning['accepted'] else 'No candidate passed; closest'}: "
                     f"candidate {best['index']} ({html.escape(best['kind'])}, {len(best['int8'])}/"
                     f"{len(tuning['layers'])} layers INT8), criterion {html.escape(tuning['criterion'])}, "
                     f"{len(tuning['candidates'])} candidates in {tuning['minutes']:.1f} min; stop: "
                     f"{html.escape(tuning['stop_reason'])}.</p>")
        parts.append(figure_html("Tuner: throughput vs metric degradation, Pareto front", scatter(dict(tuning)),
                                 dpi=dpi, level=3))
    parts += ["<h2>Validation against the reference MC</h2>",
              "<h3>Paired differences (identical conditions and noise)</h3>", _paired_table(paired),
              *validation_parts(validation, dpi=dpi)]
    return write_page(path, "caloquant demo", parts)
