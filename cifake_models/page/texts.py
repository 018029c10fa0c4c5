"""The page's markdown: the header (what the detectors are, how far to trust them on uploads), the
Detectors table, the notes under the Compare tab's tables, and the threshold explorer's summary.
Every figure quoted comes from the evaluation reports, never typed here."""

from __future__ import annotations

import cifake_models as cm
from cifake_models.calibration import TARGET_ACCURACY
from cifake_models.page.words import join_words

from .cards import decision_rule
from .figures import ThresholdPoint
from .state import AppState


def compare_notes(state: AppState) -> str:
    lines = []
    for name in state.names:
        spec, report = cm.get_spec(name), state.reports.get(name, {})
        notes = report.get("notes") or spec.notes
        free = report.get("test_leak_free", {})
        extra = f" Leak-free split: {free.get('removed')} test images that also occur in train removed." if free else ""
        if notes or extra:
            lines.append(f"- **{spec.title}**: {notes}{extra}")
    evaluated = next((r.get("evaluated", {}) for r in state.reports.values()), {})
    head = (
        "Figures on CIFAKE's official test split (FAKE is the positive class for ROC and PR). "
        "Accuracy and the per-class figures call every image: FAKE when P(FAKE) reaches the detector's threshold, "
        "chosen on a validation split carved out of train, never on test; so is whether P is averaged over the image "
        "and its mirror image (the recipe says where). On the Detect tab a detector also answers UNSURE inside a band "
        "of P(FAKE), chosen on validation too (the *Decides* column of the *Detectors* table there gives each band). "
        "Times per image are from the evaluation run"
        + (f" ({evaluated.get('hardware')})" if evaluated.get("hardware") else "")
        + "."
    )
    return head + "\n\n" + "\n".join(lines)


def _percent(fraction: float | None) -> str:
    return "" if fraction is None else f"{100 * fraction:.1f}%"


def detectors_markdown(state: AppState) -> str:
    rows = [
        "| Detector | Status | Initialisation | Threshold P(FAKE) | Decides (UNSURE between) "
        "| Accuracy on CIFAKE's test files "
        "| …resized or re-saved first: mean (worst) |",
        "|---|---|---|---|---|---:|---:|",
    ]
    for name in state.names:
        if name in state.detectors:
            detector = state.detectors[name]
            status, threshold, decides = "✅ available", f"{detector.rule.threshold:.3f}", decision_rule(detector)
            if getattr(state.detectors[name], "unavailable", None):  # a committee serving on fewer members
                status += (
                    f" without {', '.join(state.detectors[name].unavailable)} (weights fitted for the members it has)"
                )
        else:
            status, threshold, decides = f"❌ unavailable: {state.unavailable[name]}", "", ""
        if name in state.stale_reports:
            status += f" ⚠ {state.stale_reports[name]}"
        report = state.reports.get(name, {})
        robustness = report.get("robustness")
        robust = (
            (
                f"{_percent(robustness['mean_accuracy'])} ({_percent(robustness['worst']['accuracy'])}, "
                f"{robustness['worst']['perturbation']})"
            )
            if robustness
            else ""
        )
        rows.append(
            f"| {state.title(name)} | {status.replace('|', '/')} | {state.initialisation(name)} "
            f"| {threshold} | {decides} "
            f"| {_percent((report.get('test') or {}).get('accuracy'))} | {robust} |"
        )
    return "\n".join(rows)


def scope_statement(state: AppState) -> str:
    """How accurate the detectors are on CIFAKE's own files and on resized or re-saved copies, from the reports."""
    reports = {n: r for n, r in state.reports.items() if n in state.detectors and r.get("robustness")}
    if not reports:
        return ""
    clean = [r["test"]["accuracy"] for r in reports.values()]
    mean = [r["robustness"]["mean_accuracy"] for r in reports.values()]
    worst_name, worst = min(
        ((n, r["robustness"]["worst"]) for n, r in reports.items()), key=lambda item: item[1]["accuracy"]
    )
    return (
        f"On CIFAKE's own test files the detectors are right {_percent(min(clean))} to {_percent(max(clean))}"
        " of the time. "
        f"Uploads are rarely those files: on the same test images resized, re-compressed, blurred, shifted or cropped "
        f"first, they are right {_percent(min(mean))} to {_percent(max(mean))} of the time on average, and "
        f"{state.title(worst_name)} falls to {_percent(worst['accuracy'])} ({worst['perturbation']}); "
        "see *Detectors* below and the *Evaluation* tab."
    )


def scratch_statement(state: AppState) -> str:
    inits = {n: state.initialisation(n) for n in state.detectors}
    if inits and all(v.lower().startswith("random") for v in inits.values()):
        transferred = [spec.title for spec in map(cm.get_spec, state.names) if spec.imagenet_weights]
        return (
            "**Every detector here was trained from scratch on CIFAKE: ImageNet weights were not used** "
            f"(the paper fine-tuned ImageNet-pretrained {join_words(transferred)}, so its figures "
            "are not the same experiment)."
        )
    scratch = [state.title(n) for n, v in inits.items() if v.lower().startswith("random")]
    if scratch:
        return (
            f"**Trained from scratch (ImageNet weights not used): {', '.join(scratch)}.**"
            " Other checkpoints' initialisation is listed below."
        )
    return ""


CIFAR_CLASSES = "airplanes, cars, birds, cats, deer, dogs, frogs, horses, ships and trucks"


def judging_markdown(state: AppState) -> str:
    """What the detectors can and cannot judge, in two sentences, and whether the scope check runs."""
    unavailable = f" (The scope check is not running here: {state.scope_error}.)" if state.scope is None else ""
    return (
        f"The detectors can judge one thing: whether a small photo of one of CIFAR-10's ten subjects ({CIFAR_CLASSES}) "
        "is a real CIFAR-10 photo or a Stable Diffusion 1.4 picture made in its style. Other subjects, drawings, "
        "screenshots, text and pictures from newer generators lie outside what they learned, and such an image is "
        f"marked **out of scope** instead of FAKE or REAL.{unavailable}"
    )


def header_markdown(state: AppState) -> str:
    n_ok, n_all = len(state.detectors), len(state.names)
    missing = (
        f" **{n_all - n_ok} of {n_all} detectors are unavailable** (see *Detectors* below)." if n_ok < n_all else ""
    )
    specs = [cm.get_spec(name) for name in state.names]
    papers, ours = [s.title for s in specs if s.paper], [s.title for s in specs if not s.paper]
    return (
        "# CIFAKE: real photo or AI-generated?\n"
        "The detectors of *Harnessing Machine Learning for Discerning AI-Generated Synthetic Images*"
        f" ({join_words(papers)})" + (f", then {join_words(ours)}" if ours else "") + ", "
        "trained on CIFAKE (Bird & Lotfi, 2024): 32x32 CIFAR-10 photos (REAL) and Stable Diffusion 1.4 "
        "images (FAKE). Your image is brought to 32x32 RGB first (shorter side to 32, centre crop), as the "
        f"paper's test transform does, so fine detail is lost. {scope_statement(state)} "
        "Probabilities are calibrated on the validation split, and a detector answers **UNSURE** where, on "
        f"validation, it would be right less than {TARGET_ACCURACY:.0%} of the time.{missing}\n\n"
        + scratch_statement(state)
    )


def threshold_markdown(point: ThresholdPoint | None) -> str:
    """What the explorer's confusion matrix means, FAKE the positive class; empty without a sweep."""
    if point is None:
        return ""
    precision = _percent(point.precision) if point.precision is not None else "undefined (no image called FAKE)"
    return (
        f"At P(FAKE) ≥ {point.threshold:.3f}, the nearest threshold the report holds (FAKE is the positive class): "
        f"**precision {precision}**, **recall {_percent(point.recall)}**"
        f" ({point.fake_called_fake:,} of {point.n_fake:,} FAKE images caught),"
        f" **false-positive rate {_percent(point.false_positive_rate)}**"
        f" ({point.real_called_fake:,} of {point.n_real:,} REAL images called FAKE);"
        f" accuracy {_percent(point.accuracy)} on {point.n_fake + point.n_real:,} images."
    )
