"""The Detect tab's result cards: for each file, every detector's P(REAL), P(FAKE), verdict and
threshold, how far the detectors agree, the conversions made, and the 32x32 image the
detectors saw. Their stylesheet is ``cards.css`` beside this file."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from PIL import Image

from cifake_models.calibration import TARGET_ACCURACY
from cifake_models.explain import NO_HEATMAP
from cifake_models.results import OUT_OF_SCOPE_TEXT, ImageResult
from cifake_models.stability import CHANGES

from .state import AppState

CARD_CSS = (Path(__file__).parent / "cards.css").read_text(encoding="utf-8")
MAX_CARDS = 24  # result cards drawn per request; the table and CSV hold every file


def pixels_data_uri(array: np.ndarray, scale: int = 4) -> str:
    """A uint8 RGB array upscaled ``scale`` times with nearest neighbour (no smoothing), as a PNG data URI."""
    height, width = array.shape[:2]
    image = Image.fromarray(array).resize((width * scale, height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _bar(p: float, colour: str) -> str:
    return (
        f'<div class="bar"><div class="fill" style="width:{100 * p:.1f}%;background:{colour}"></div>'
        f"<span>{100 * p:.1f}%</span></div>"
    )


def decision_rule(detector) -> str:
    """``FAKE ≥ 0.912, REAL < 0.085`` (UNSURE between), or the bare threshold where the band is empty."""
    band = detector.rule.unsure
    if band.low == band.high:
        return f"{detector.rule.threshold:.3f}"
    return f"FAKE ≥ {band.high:.3f}, REAL &lt; {band.low:.3f}"


def _stability_cell(result: ImageResult, name: str) -> str:
    if result.stability is None:
        return ""
    check = result.stability.get(name)
    if check is None:
        why = result.stability_errors.get(name)
        return f'<td class="stability">not checked{": " + html.escape(why) if why else ""}</td>'
    return f'<td class="stability {"stable" if check.stable else "flips"}">{html.escape(check.sentence)}</td>'


def heatmap_strip(state: AppState, result: ImageResult) -> str:
    """Each detector's map of its evidence, laid over the 32x32 image, in registry order."""
    if not result.heatmaps:
        return ""
    figures = "".join(
        f'<figure><img src="{pixels_data_uri(heatmap.image(128, under=result.array), scale=1)}"'
        f' width="128" height="128" alt="{html.escape(state.title(name))} heatmap">'
        f"<figcaption>{html.escape(state.title(name))}</figcaption></figure>"
        for name, heatmap in result.heatmaps.items()
    )
    methods = "; ".join(dict.fromkeys(heatmap.method for heatmap in result.heatmaps.values()))
    committees = f" {NO_HEATMAP}" if result.committees else ""
    return (
        f'<div class="heatmaps"><div class="maps">{figures}</div>'
        f'<p class="method">Why: {html.escape(methods)}.{html.escape(committees)}</p></div>'
    )


def scope_badge(result: ImageResult) -> str:
    """Whether the image is like the ones the detectors learned, with its score and the cut."""
    if result.scope is None:
        return ""
    s = result.scope
    if s.in_scope:
        return f'<span class="agree in-scope" title="scope score {s.score:.2f} ≤ cut {s.cut:.2f}">in scope</span>'
    return (
        f'<span class="agree out_of_scope" title="scope score {s.score:.2f} > cut {s.cut:.2f}">'
        f"{html.escape(OUT_OF_SCOPE_TEXT)} (score {s.score:.2f} &gt; cut {s.cut:.2f})</span>"
    )


def result_card(state: AppState, result: ImageResult) -> str:
    name = html.escape(result.file)
    if result.error and not result.predictions:
        return (
            f'<div class="card error"><div class="head"><b>{name}</b></div>'
            f'<p class="msg">⚠ {html.escape(result.error)}</p></div>'
        )
    rows = []
    for det in state.names:
        title = html.escape(state.title(det))
        if det in result.predictions:
            p = result.predictions[det]
            verdict = p.verdict
            rows.append(
                f'<tr><td class="det">{title}</td><td>{_bar(p.p_real, "#2e7d32")}</td>'
                f'<td>{_bar(p.p_fake, "#c62828")}</td><td class="verdict {verdict.lower()}">{verdict}</td>'
                f'<td class="thr">{decision_rule(state.detectors[det])}</td>'
                f"{_stability_cell(result, det)}</tr>"
            )
        else:
            reason = state.unavailable.get(det) or result.detector_errors.get(det, "unavailable")
            span = 4 + (result.stability is not None)
            rows.append(
                f'<tr class="na"><td class="det">{title}</td>'
                f'<td colspan="{span}">unavailable: {html.escape(reason)}</td></tr>'
            )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in result.notes) or "<li>none: already 32x32 RGB</li>"
    # No badge where no detector voted (every one unavailable, or only committees answered).
    agreement = (
        f'<span class="agree {result.majority.lower()}">{html.escape(result.agreement)}</span>'
        if result.agreement
        else ""
    )
    committees = scope_badge(result) + "".join(
        f'<span class="agree committee {p.verdict.lower()}">{html.escape(state.title(n))}: {p.verdict}</span>'
        for n, p in result.committees.items()
    )
    stability_head = (
        (f'<th title="the verdict again on the image {html.escape("; ".join(c.when for c in CHANGES))}">Holds up?</th>')
        if result.stability is not None
        else ""
    )
    table_head = (
        "<thead><tr><th>Detector</th><th>P(REAL)</th><th>P(FAKE)</th><th>Verdict</th>"
        '<th title="calibrated P(FAKE) at or above which the detector says FAKE, and below which REAL;'
        " UNSURE between (chosen on the validation split: outside the band,"
        f' {TARGET_ACCURACY:.0%} of validation images are right)">Decides</th>'
        f"{stability_head}</tr></thead>"
    )
    return f"""<div class="card">
<div class="head"><b>{name}</b> {committees}{agreement}</div>
<div class="body">
<figure><img src="{pixels_data_uri(result.array)}" width="128" height="128" alt="32x32 input of {name}">
<figcaption>what the detectors saw: 32x32, shown 4x (nearest neighbour)</figcaption></figure>
<div class="probs"><table>{table_head}
<tbody>{"".join(rows)}</tbody></table>
<div class="notes">Conversions: <ul>{notes}</ul></div></div></div>{heatmap_strip(state, result)}</div>"""


def results_html(state: AppState, answers: list[ImageResult]) -> str:
    if not answers:
        return '<p class="more">Drop images above, paste one, or click an example to see every detector\'s answer.</p>'
    cards = [result_card(state, r) for r in answers[:MAX_CARDS]]
    if len(answers) > MAX_CARDS:
        cards.append(
            f'<p class="more">Showing the first {MAX_CARDS} of {len(answers)} files;'
            " the table below and the CSV hold all of them.</p>"
        )
    return "\n".join(cards)
