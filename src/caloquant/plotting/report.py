"""Self-contained HTML pages (every figure an embedded PNG) and the validation report built on them."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from caloquant._atomic import write_text_atomic
from caloquant.plotting import figures
from caloquant.validate.bins import AngleBins
from caloquant.validate.suite import ValidationResult

_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1300px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
        ".pass{color:#070}.fail{color:#b00;font-weight:bold}img{max-width:100%;margin:1em 0}")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def figure_html(title: str, fig: Figure, *, dpi: int = 90, level: int = 2) -> str:
    """A heading and the figure as an embedded ``data:image/png;base64`` image."""
    data = base64.b64encode(figures.png_bytes(fig, dpi)).decode("ascii")
    t = html.escape(title)
    return f"<h{level}>{t}</h{level}><img alt='{t}' src='data:image/png;base64,{data}'>"


def write_page(path: str | os.PathLike[str], title: str, parts: Sequence[str]) -> Path:
    """Write one offline-readable HTML page (inline CSS, no external resources) atomically."""
    head = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>")
    return write_text_atomic(path, "\n".join([head, *parts, "</body></html>"]))


def _table(result: ValidationResult) -> str:
    rows = []
    for cand, cr in result.candidates.items():
        rows.append(f"<h3>{html.escape(cand)} ({len(cr.features):,} showers)</h3><table>"
                    "<tr><th>metric</th><th>value</th><th>error</th><th>noise floor</th><th>verdict</th></tr>")
        for name, m in cr.metrics.items():
            cls, word = {"pass": ("pass", "pass"), "fail": ("fail", "FAIL")}.get(m.verdict, ("fail", m.verdict))
            rows.append(f"<tr><td style='text-align:left'>{name}</td><td>{_fmt(m.value)}</td><td>{_fmt(m.error)}</td>"
                        f"<td>{_fmt(m.noise_floor)}</td><td class='{cls}'>{word}</td></tr>")
        rows.append("</table>")
        parts = cr.metrics["3dgan_moments"].details.get("per_moment") if "3dgan_moments" in cr.metrics else None
        if parts:
            terms = ", ".join(f"{k} {_fmt(v)}" for k, v in parts.items())
            rows.append(f"<p>3dgan_moments by moment (relative error, mean over energy bins): {terms}</p>")
        empty = sorted({b for m in cr.metrics.values() for b in m.empty_bins})
        if empty:
            rows.append(f"<p>Energy bins without enough showers (not scored): {html.escape(', '.join(empty))}</p>")
        unscored = sorted({b for m in cr.metrics.values() for b in m.unscored_bins})
        if unscored:
            rows.append("<p>Automatic energy bins without enough showers (left out of the binned averages): "
                        f"{html.escape(', '.join(unscored))}</p>")
    return "".join(rows)


def validation_parts(result: ValidationResult, *, dpi: int = 90) -> list[str]:
    """HTML blocks of a validation result: description, metric tables and every physics figure."""
    ref = result.reference
    cands = [(name, cr.features) for name, cr in result.candidates.items()]
    seps = [cr.metrics["separation_power_mean"].details.get("per_feature", {}) for cr in result.candidates.values()]
    figs = [
        ("Longitudinal and lateral profiles", figures.profiles(ref, cands)),
        ("3DGAN moments vs primary energy", figures.moments_vs_energy(ref, cands, result.bins)),
        ("Sampling fraction vs primary energy", figures.sampling_fraction_vs_energy(ref, cands, result.bins)),
        ("High-level feature histograms (S = separation power)", figures.feature_histograms(ref, cands, seps)),
        ("Cell-energy spectrum", figures.cell_spectrum(ref, cands)),
        ("Average shower images", figures.average_images(ref, cands)),
    ]
    if ref.tilted:
        figs.insert(3, ("Tilt: reconstructed vs true incidence angle",
                        figures.tilt_response(ref, cands, AngleBins.of(ref.theta))))
    parts = [f"<p>Reference: {html.escape(ref.source)} ({len(ref):,} showers, window {ref.window}); "
             f"energy bins: {html.escape(', '.join(result.bins.labels))}. Noise floor = same metric between two "
             "halves of the reference; pass rules in docs/validation.md.</p>", _table(result)]
    parts += [figure_html(title, fig, dpi=dpi) for title, fig in figs]
    return parts


def write_report(result: ValidationResult, path: str | os.PathLike[str], *, dpi: int = 90) -> Path:
    """Write the HTML report of a validation result (atomically) and return its path."""
    return write_page(path, "caloquant validation", ["<h1>caloquant validation</h1>",
                                                     *validation_parts(result, dpi=dpi)])
