"""The README's results and recipe tables, from the shipped reports: ``python -m train.results_table``.

Rewrites each block between its two markers in README.md; ``--check`` only says whether they
are up to date (exit 1 if not), which the tests use.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from cifake_models import REPORT_DIR, get_spec, list_detectors, load_report
from cifake_models.metrics import percent
from cifake_models.paths import REPO_ROOT
from cifake_models.reports import describe_recipe

README = REPO_ROOT / "README.md"
INITIALISATION = {"none": "from scratch", "imagenet": "ImageNet"}
NOT_IN_PAPER = "not in the paper"


def _reports(report_dir) -> list[tuple]:
    out = []
    for name in list_detectors():
        try:
            out.append((get_spec(name), load_report(name, report_dir)))
        except FileNotFoundError:
            out.append((get_spec(name), None))
    return out


def results_table(report_dir: str | Path | None = None) -> str:
    rows = [
        "| detector | accuracy (paper) | accuracy (ours) | ROC-AUC (paper) | ROC-AUC (ours) | PR-AUC | leak-free accuracy | leak-free ROC-AUC | beats paper | ms/image (1 / batch of 64) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |",
    ]
    for spec, report in _reports(report_dir):
        paper_accuracy = percent(spec.paper.accuracy) if spec.paper else NOT_IN_PAPER
        paper_auc = f"{spec.paper.roc_auc:.4f}" if spec.paper else NOT_IN_PAPER
        if report is None:
            rows.append(f"| {spec.title} | {paper_accuracy} | not shipped | {paper_auc} | | | | | | |")
            continue
        test, leak_free = report["test"], report["test_leak_free"]
        beats = "" if spec.paper is None else "yes" if test["accuracy"] > spec.paper.accuracy and test["roc_auc"] > spec.paper.roc_auc else "no"
        rows.append(
            f"| {spec.title} | {paper_accuracy} | **{percent(test['accuracy'])}** | {paper_auc} "
            f"| **{test['roc_auc']:.4f}** | {test['pr_auc']:.4f} | {percent(leak_free['accuracy'])} | {leak_free['roc_auc']:.4f} "
            f"| {beats} | {report['ms_per_image']['batch_1']:.1f} / {report['ms_per_image']['batch_64']:.2f} |"
        )
    return "\n".join(rows)


def robustness_table(report_dir: str | Path | None = None) -> str:
    """Accuracy under each perturbation of the suite, with the mean and the worst case."""
    reports = [(spec, report) for spec, report in _reports(report_dir) if report and report.get("robustness")]
    if not reports:
        return "No report holds robustness figures yet: run `python -m train.evaluate`."
    names = [score["perturbation"] for score in reports[0][1]["robustness"]["scores"]]
    rows = [
        "| detector | clean | " + " | ".join(names) + " | mean | worst |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: |",
    ]
    for spec, report in reports:
        robustness = report["robustness"]
        by_name = {score["perturbation"]: score["accuracy"] for score in robustness["scores"]}
        cells = " | ".join(percent(by_name[name]) if name in by_name else "" for name in names)
        rows.append(
            f"| {spec.title} | {percent(robustness['clean_accuracy'])} | {cells} | **{percent(robustness['mean_accuracy'])}** "
            f"| **{percent(robustness['worst']['accuracy'])}** |"
        )
    return "\n".join(rows)


def trust_table(report_dir: str | Path | None = None) -> str:
    """Calibration before and after (test split and suite), and the unsure band's trade-off."""
    reports = [(spec, report) for spec, report in _reports(report_dir) if report and report.get("calibration", {}).get("test")]
    if not reports:
        return "No report holds calibration figures yet: run `python -m train.evaluate`."
    rows = [
        "| detector | ECE, test: raw → calibrated | Brier, test: raw → calibrated | ECE under the suite (mean): raw → calibrated "
        "| worst ECE under the suite | unsure band on P(FAKE) | test images decided | accuracy on those (target) |",
        "| --- | ---: | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for spec, report in reports:
        test, suite, unsure = report["calibration"]["test"], report["calibration"]["suite"], report.get("unsure")
        band = decided = right = ""
        if unsure:
            band = f"{unsure['low']:.3f} – {unsure['high']:.3f}"
            decided = percent(unsure["test"]["coverage"])
            right = f"{percent(unsure['test']['accuracy']) if unsure['test']['accuracy'] is not None else 'none decided'} ({unsure['target_accuracy']:.0%})"
        rows.append(
            f"| {spec.title} | {test['ece_before']:.4f} → **{test['ece_after']:.4f}** | {test['brier_before']:.4f} → {test['brier_after']:.4f} "
            f"| {suite['mean_ece_before']:.4f} → **{suite['mean_ece_after']:.4f}** | {suite['worst_ece_after']:.4f} | {band} | {decided} | {right} |"
        )
    return "\n".join(rows)


def _stage_validation(report: dict) -> str:
    """Validation accuracy (argmax) at the end of each training stage, from the history."""
    last: dict[int, float] = {}
    for record in report.get("history") or []:
        last[record.get("stage", 1)] = record["val_accuracy"]
    return " → ".join(percent(accuracy) for _, accuracy in sorted(last.items()))


def _trained_on(report: dict) -> str:
    """Hardware and total wall time; where stages ran on different hardware, which ran where."""
    groups: list[tuple[str, list[int]]] = []  # (hardware, stage numbers), in stage order
    stages = [*(report.get("earlier_stages") or []), report]
    for number, stage in enumerate(stages, 1):
        hardware = stage["training"]["hardware"]
        if groups and groups[-1][0] == hardware:
            groups[-1][1].append(number)
        else:
            groups.append((hardware, [number]))
    minutes = f"{report['training']['wall_time_s'] / 60:.0f} min"
    if len(groups) == 1:
        return f"{groups[0][0]}; {minutes}"
    where = "; ".join(
        f"stage {numbers[0]}: {hardware}" if len(numbers) == 1 else f"stages {numbers[0]}-{numbers[-1]}: {hardware}"
        for hardware, numbers in groups
    )
    return f"{where}; {minutes} in all"


def _mirror_validation(report: dict) -> str:
    """Validation accuracy with one view and with mirror averaging; the chosen one in bold."""
    test_time = report.get("test_time")
    if not test_time:
        return ""
    accuracy = test_time["validation_accuracy"]
    single, averaged = percent(accuracy["single"]), percent(accuracy["mirror_average"])
    return f"{single} → **{averaged}**" if test_time["mirror_average"] else f"**{single}** → {averaged}"


def recipes_table(report_dir: str | Path | None = None) -> str:
    rows = [
        "| detector | paper's recipe | shipped checkpoint's recipe | initialisation | trained on, wall time "
        "| validation accuracy after each stage | validation accuracy: single view → mirror-averaged (chosen in bold) |",
        "| --- | --- | --- | --- | --- | ---: | ---: |",
    ]
    for spec, report in _reports(report_dir):
        paper_recipe = spec.paper.recipe if spec.paper else NOT_IN_PAPER
        if report is None:
            rows.append(f"| {spec.title} | {paper_recipe} | not shipped | | | | |")
            continue
        rows.append(
            f"| {spec.title} | {paper_recipe} | {describe_recipe(report)} | {INITIALISATION[report['weights']]} "
            f"| {_trained_on(report)} | {_stage_validation(report)} | {_mirror_validation(report)} |"
        )
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[str | Path | None], str]] = {
    "results": results_table,
    "robustness": robustness_table,
    "trust": trust_table,
    "recipes": recipes_table,
}


def markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:start (python -m train.results_table) -->", f"<!-- {block}:end -->"


def updated_readme(text: str, report_dir: str | Path | None = None) -> str:
    for block, render in BLOCKS.items():
        start, end = markers(block)
        if start not in text or end not in text:
            raise ValueError(f"README lacks the markers {start} ... {end}")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{render(report_dir)}\n{end}{tail}"
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.results_table", description=__doc__)
    parser.add_argument("--reports", type=Path, default=REPORT_DIR)
    parser.add_argument("--readme", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="exit 1 if the README's tables differ from the reports")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = updated_readme(text, args.reports)
    if args.check:
        if new != text:
            print(f"{args.readme}: tables are out of date; run python -m train.results_table", file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(new)
    print(f"{args.readme}: tables updated from {args.reports}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
