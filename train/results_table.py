"""The generated tables of README.md and docs/*.md, from the shipped reports: ``python -m train.results_table``.

Rewrites every block between its two markers, in whichever of those files holds it; ``--check``
only says whether all are up to date (exit 1 if not), which the tests use.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from cifake_models import REPORT_DIR, get_spec, list_detectors, load_report
from cifake_models.metrics import percent
from cifake_models.paths import REPO_ROOT
from cifake_models.reports import describe_recipe
from cifake_models.scope import SCOPE_REPORT

from . import scope_eval

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


def _paper(spec) -> tuple[str, str]:
    """The paper's accuracy and ROC-AUC for a detector, or what to write where it has none."""
    if spec.paper is None:
        return NOT_IN_PAPER, NOT_IN_PAPER
    return percent(spec.paper.accuracy), f"{spec.paper.roc_auc:.4f}"


def _table(header: str, align: str, row: Callable, report_dir) -> str:
    """A markdown table with one row per registered detector; ``row(spec, report)`` gets None where none ships."""
    return "\n".join([header, align, *(row(spec, report) for spec, report in _reports(report_dir))])


def _summary_row(spec, report: dict | None) -> str:
    paper_accuracy, paper_auc = _paper(spec)
    if report is None:
        return f"| {spec.title} | not shipped | | {paper_accuracy} | {paper_auc} |"
    test = report["test"]
    accuracy, auc = percent(test["accuracy"]), f"{test['roc_auc']:.4f}"
    return f"| {spec.title} | **{accuracy}** | **{auc}** | {paper_accuracy} | {paper_auc} |"


def summary_table(report_dir: str | Path | None = None) -> str:
    """The README's short table: accuracy and ROC-AUC on the test split, ours beside the paper's."""
    header = "| detector | accuracy | ROC-AUC | the paper's accuracy | the paper's ROC-AUC |"
    return _table(header, "| --- | ---: | ---: | ---: | ---: |", _summary_row, report_dir)


def _beats_paper(spec, test: dict) -> str:
    if spec.paper is None:
        return ""
    better = test["accuracy"] > spec.paper.accuracy and test["roc_auc"] > spec.paper.roc_auc
    return "yes" if better else "no"


def _results_row(spec, report: dict | None) -> str:
    paper_accuracy, paper_auc = _paper(spec)
    if report is None:
        return f"| {spec.title} | {paper_accuracy} | not shipped | {paper_auc} | | | | | | |"
    test, leak_free, ms = report["test"], report["test_leak_free"], report["ms_per_image"]
    return (
        f"| {spec.title} | {paper_accuracy} | **{percent(test['accuracy'])}** | {paper_auc} "
        f"| **{test['roc_auc']:.4f}** | {test['pr_auc']:.4f} | {percent(leak_free['accuracy'])} "
        f"| {leak_free['roc_auc']:.4f} | {_beats_paper(spec, test)} "
        f"| {ms['batch_1']:.1f} / {ms['batch_64']:.2f} |"
    )


def results_table(report_dir: str | Path | None = None) -> str:
    """The full table of docs/results.md: the paper's figures and ours, PR-AUC, the leak-free split, speed."""
    header = (
        "| detector | accuracy (paper) | accuracy (ours) | ROC-AUC (paper) | ROC-AUC (ours) | PR-AUC "
        "| leak-free accuracy | leak-free ROC-AUC | beats paper | ms/image (1 / batch of 64) |"
    )
    align = "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | ---: |"
    return _table(header, align, _results_row, report_dir)


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
            f"| {spec.title} | {percent(robustness['clean_accuracy'])} | {cells} "
            f"| **{percent(robustness['mean_accuracy'])}** | **{percent(robustness['worst']['accuracy'])}** |"
        )
    return "\n".join(rows)


def _unsure_cells(unsure: dict | None) -> str:
    """The unsure band, the share of test images it decides and its accuracy on them (target)."""
    if not unsure:
        return " |  | "
    test = unsure["test"]
    right = percent(test["accuracy"]) if test["accuracy"] is not None else "none decided"
    band = f"{unsure['low']:.3f} – {unsure['high']:.3f}"
    return f"{band} | {percent(test['coverage'])} | {right} ({unsure['target_accuracy']:.0%})"


def trust_table(report_dir: str | Path | None = None) -> str:
    """Calibration before and after (test split and suite), and the unsure band's trade-off."""
    reports = [
        (spec, report) for spec, report in _reports(report_dir) if report and report.get("calibration", {}).get("test")
    ]
    if not reports:
        return "No report holds calibration figures yet: run `python -m train.evaluate`."
    rows = [
        "| detector | ECE, test: raw → calibrated | Brier, test: raw → calibrated "
        "| ECE under the suite (mean): raw → calibrated | worst ECE under the suite "
        "| unsure band on P(FAKE) | test images decided | accuracy on those (target) |",
        "| --- | ---: | ---: | ---: | ---: | :---: | ---: | ---: |",
    ]
    for spec, report in reports:
        test, suite = report["calibration"]["test"], report["calibration"]["suite"]
        rows.append(
            f"| {spec.title} | {test['ece_before']:.4f} → **{test['ece_after']:.4f}** "
            f"| {test['brier_before']:.4f} → {test['brier_after']:.4f} "
            f"| {suite['mean_ece_before']:.4f} → **{suite['mean_ece_after']:.4f}** | {suite['worst_ece_after']:.4f} "
            f"| {_unsure_cells(report.get('unsure'))} |"
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


def _recipes_row(spec, report: dict | None) -> str:
    paper_recipe = spec.paper.recipe if spec.paper else NOT_IN_PAPER
    if report is None:
        return f"| {spec.title} | {paper_recipe} | not shipped | | | | |"
    return (
        f"| {spec.title} | {paper_recipe} | {describe_recipe(report)} | {INITIALISATION[report['weights']]} "
        f"| {_trained_on(report)} | {_stage_validation(report)} | {_mirror_validation(report)} |"
    )


def recipes_table(report_dir: str | Path | None = None) -> str:
    """Every shipped checkpoint's recipe, stage by stage, beside the paper's."""
    header = (
        "| detector | paper's recipe | shipped checkpoint's recipe | initialisation | trained on, wall time "
        "| validation accuracy after each stage "
        "| validation accuracy: single view → mirror-averaged (chosen in bold) |"
    )
    return _table(header, "| --- | --- | --- | --- | --- | ---: | ---: |", _recipes_row, report_dir)


def _scope_report(report_dir) -> dict | None:
    path = Path(report_dir or REPORT_DIR) / SCOPE_REPORT
    return json.loads(path.read_text()) if path.is_file() else None


def scope_summary_table(report_dir: str | Path | None = None) -> str:
    """The README's scope table (``train.scope_eval.summary_markdown``), or why there is none."""
    report = _scope_report(report_dir)
    return scope_eval.summary_markdown(report) if report else "No scope report ships (assets/reports/scope.json)."


def scope_table(report_dir: str | Path | None = None) -> str:
    """docs/scope.md's tables (``train.scope_eval.markdown``), or why there are none."""
    report = _scope_report(report_dir)
    return scope_eval.markdown(report) if report else "No scope report ships (assets/reports/scope.json)."


BLOCKS: dict[str, Callable[[str | Path | None], str]] = {
    "summary": summary_table,
    "scope_summary": scope_summary_table,
    "scope": scope_table,
    "results": results_table,
    "robustness": robustness_table,
    "trust": trust_table,
    "recipes": recipes_table,
}


def markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:start (python -m train.results_table) -->", f"<!-- {block}:end -->"


def documents(root: Path) -> list[Path]:
    """The files that may hold generated blocks: README.md and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def updated_text(text: str, tables: dict[str, str], where: str = "text") -> tuple[str, set[str]]:
    """``text`` with every block it holds rewritten from ``tables``, and the names of those blocks."""
    found = set()
    for block, table in tables.items():
        start, end = markers(block)
        if start not in text and end not in text:
            continue
        if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
            raise ValueError(f"{where}: the markers {start} ... {end} must occur once each, in that order")
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{table}\n{end}{tail}"
        found.add(block)
    return text, found


def updated_documents(root: Path, report_dir: str | Path | None = None) -> dict[Path, tuple[str, str]]:
    """Each document's text now and as the reports would make it; every block must live somewhere."""
    tables = {block: render(report_dir) for block, render in BLOCKS.items()}
    out, placed = {}, set()
    for path in documents(root):
        if path.is_file():
            text = path.read_text()
            new, found = updated_text(text, tables, str(path))
            out[path], placed = (text, new), placed | found
    missing = [block for block in BLOCKS if block not in placed]
    if missing:
        raise ValueError(f"no file under {root} (README.md, docs/*.md) holds the block(s) {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.results_table", description=__doc__)
    parser.add_argument("--reports", type=Path, default=REPORT_DIR)
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the folder holding README.md and docs/")
    parser.add_argument("--check", action="store_true", help="exit 1 if any generated table differs from the reports")
    args = parser.parse_args(argv)
    documents_now = updated_documents(args.root, args.reports)
    stale = [path for path, (text, new) in documents_now.items() if new != text]
    if args.check:
        for path in stale:
            print(f"{path}: tables are out of date; run python -m train.results_table", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.write_text(documents_now[path][1])
    print(f"{len(stale)} of {len(documents_now)} files under {args.root} updated from {args.reports}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
