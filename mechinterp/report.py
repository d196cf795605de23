"""The claims report: a self-contained index.html beside results.json, written atomically.

The page shows one row per (claim, model) quantity: the measured value beside the thesis value and
the threshold row. Figures are embedded as base64 PNG so the page needs nothing else (no CDN, no side
files). When a planted model is among the subjects, the page says loudly that those rows check the
suite, not the real models. The results model and results.json live in mechinterp/results.py, the
regression comparison in mechinterp/compare.py.

`write_report` stages every file in a temporary sibling directory and renames it into place, so a
report directory always holds one run's files, never a new results.json beside an old index.html.

`python -m mechinterp.report merge --out DIR RUN...` merges several runs (e.g. reports/tox-*) into
one page: claims x models, and the circuit cards side by side.
"""

from __future__ import annotations

import argparse
import base64
import glob
import html
import json
import math
import os
import secrets
import shutil
import sys
import time
from pathlib import Path

import pandas as pd

from mechinterp.compare import compare_results, comparison_summary, render_comparison  # noqa: F401 (re-exported)
from mechinterp.results import (  # noqa: F401 (re-exported: callers that know them as report.X)
    RESULTS_FILE, STATUSES, ClaimResult, QuantityResult, ResultsFileError, RunInfo, figure_to_png, load_results,
    package_versions, results_file, results_json, results_to_dict, to_jsonable, utc_now,
)

PLANTED_WARNING = (
    "Synthetic models with planted circuits: these rows are a check of the suite itself "
    "(it finds circuits that were put there by hand), not evidence about the real models."
)
# Tag on a row whose quantity the planted model was built to (PlantedInfo.calibrated).
CALIBRATED_NOTE = ("The planted model was built to this quantity (e.g. its name mover's gain set so the logit "
                   "difference is the thesis's): a pass shows only that the suite measures what the builder set.")
REPORT_FILES = ("index.html", RESULTS_FILE, "comparison.csv")
CIRCUIT_CARD = "circuit-card"  # the claim id whose details["card"] the matrix pages show side by side
# Fault injection for tests: write_report writes the staged directory's path into this file, then waits
# (so a test can kill the run between staging and renaming).
PAUSE_AFTER_STAGING_ENV = "MECHINTERP_TEST_PAUSE_AFTER_STAGING"


class ReportDirError(ValueError):
    """A --report-dir that cannot take a report (one line, raised at the start of a run)."""


class ReportWriteError(RuntimeError):
    """Writing the report failed; nothing was put in place (one line naming the directory and why)."""


# --- index.html ---

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;font-size:14px}
th{background:#f0f0f0;text-align:left}
.num{text-align:right;font-family:monospace}
.passed{background:#dff0d8}.measured{background:#d9edf7}.failed{background:#f2dede}.error{background:#f7c6a3}
.skipped,.not-run{background:#eee}.known-gap{background:#fcf8e3}
.banner{background:#fff3cd;border:3px solid #d39e00;padding:1em;font-size:18px;font-weight:bold;margin:1em 0}
.interrupted{background:#f2dede;border:3px solid #a94442;padding:1em;font-size:18px;font-weight:bold;margin:1em 0}
.tag{background:#d39e00;color:white;border-radius:3px;padding:1px 5px;font-size:12px;font-weight:bold}
.tag.calibrated{background:#6c757d;font-weight:normal}
.why{font-size:12px;color:#444;max-width:30em}
pre{white-space:pre-wrap;font-size:12px;margin:0}
img{max-width:480px}
"""


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, bool):
        return str(value)
    return f"{value:.4g}" if isinstance(value, (int, float)) else html.escape(str(value))


def _css(status: str) -> str:
    return status.replace(" ", "-")


def _status_cell(result: ClaimResult, rowspan: int) -> str:
    message = f"<pre>{html.escape(result.message)}</pre>" if result.message else ""
    return f'<td rowspan="{rowspan}" class="{_css(result.status)}"><b>{html.escape(result.status)}</b>{message}</td>'


def _result_rows(result: ClaimResult) -> str:
    quantities = result.quantities or [QuantityResult(quantity="—", measured=None, rule="—")]
    span = len(quantities)
    tag = ' <span class="tag" title="' + html.escape(PLANTED_WARNING) + '">PLANTED: synthetic, checks the suite</span>' if result.planted else ""
    model = html.escape(result.spec) + tag
    if result.identity:
        model += f'<br><small class="identity">{html.escape(result.identity)}</small>'
    if result.real_model and result.real_model != result.spec:
        model += f"<br><small>rows of {html.escape(result.real_model)}</small>"
    figure = ""
    if result.figure_png:
        encoded = base64.b64encode(result.figure_png).decode("ascii")
        figure = f'<img alt="figure for {html.escape(result.claim)} on {html.escape(result.spec)}" src="data:image/png;base64,{encoded}">'
    if result.details:
        details = json.dumps(result.details, indent=1, default=to_jsonable)
        figure += f"<details><summary>details</summary><pre>{html.escape(details)}</pre></details>"
    rows = []
    for i, q in enumerate(quantities):
        verdict = {True: "✓", False: "✗", None: ""}[q.passed]
        if getattr(q, "calibrated", False):
            verdict += f' <span class="tag calibrated" title="{html.escape(CALIBRATED_NOTE)}">calibrated by construction</span>'
        cells = [f'<td class="num">{_fmt(q.measured)} {verdict}</td>', f'<td class="num">{_fmt(q.thesis_value)}</td>',
                 f"<td>{html.escape(q.rule or '(no threshold row: for information)')}</td>", f'<td class="why">{html.escape(q.why)}</td>']
        head = (f'<td rowspan="{span}">{html.escape(result.claim)}</td><td rowspan="{span}">{model}</td>') if i == 0 else ""
        tail = (_status_cell(result, span) + f'<td rowspan="{span}">{figure}</td>') if i == 0 else ""
        rows.append(f"<tr>{head}<td>{html.escape(q.quantity)}</td>{''.join(cells)}{tail}</tr>")
    return "\n".join(rows)


_SEVERITY = ("passed", "measured", "skipped", "not run", "known gap", "failed", "error")


def _short(value) -> str:
    """3 significant digits: a matrix cell is read at a glance; the claim's table has the full value."""
    return f"{value:.3g}" if isinstance(value, float) and not math.isnan(value) else _fmt(value)


def _key_value(row: dict) -> str:
    """A result row's first measured quantity with its thesis value, e.g. '9.36 / 9.4' (or just '9.36')."""
    for q in row["quantities"]:
        if q.get("measured") is not None:
            thesis = q.get("thesis_value")
            return _short(q["measured"]) + ("" if thesis is None else f" / {_short(thesis)}")
    return ""


def render_matrix(rows: list[dict], models: list[str], link: bool = True) -> str:
    """Claims x models: per cell the worst status of that claim's tests on that model and the first
    measured value with its thesis value. `rows` are results.json rows; `link` points claims at their tables."""
    cells: dict[tuple[str, str], tuple[str, str]] = {}  # (claim, spec) -> (status, key value)
    for row in sorted(rows, key=lambda r: r["claim"]):
        key = (row["claim"], row["spec"])
        status, value = cells.get(key, ("passed", ""))
        worst = max(status, row["status"], key=lambda s: _SEVERITY.index(s) if s in _SEVERITY else len(_SEVERITY))
        cells[key] = (worst, value or _key_value(row))
    head = "<tr><th>Claim</th>" + "".join(f"<th>{html.escape(m) or '(no model: collection)'}</th>" for m in models) + "</tr>"
    lines = []
    for claim in dict.fromkeys(claim for claim, _ in cells):
        name = f'<a href="#{html.escape(claim)}">{html.escape(claim)}</a>' if link else html.escape(claim)
        line = []
        for model in models:
            if (claim, model) not in cells:
                line.append("<td>—</td>")
                continue
            status, value = cells[(claim, model)]
            shown = f'<br><span class="num">{value}</span>' if value else ""
            line.append(f'<td class="{_css(status)}">{html.escape(status)}{shown}</td>')
        lines.append(f"<tr><td>{name}</td>{''.join(line)}</tr>")
    return f'<table class="matrix">{head}{"".join(lines)}</table>'


def _card_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_card_value(v) for v in value)
    return _fmt(value)


def render_cards(rows: list[dict], models: list[str]) -> str:
    """The circuit cards (rows of claim 'circuit-card', details['card']: label -> value or short list),
    one column per model; '' when there are none."""
    cards = {}
    for row in rows:
        card = (row.get("details") or {}).get("card")
        if row["claim"] == CIRCUIT_CARD and isinstance(card, dict):
            cards.setdefault(row["spec"], card)
    if not cards:
        return ""
    columns = [m for m in models if m in cards]
    labels = list(dict.fromkeys(label for m in columns for label in cards[m]))
    head = "<tr><th></th>" + "".join(f"<th>{html.escape(m)}</th>" for m in columns) + "</tr>"
    body = "".join(f"<tr><th>{html.escape(str(label))}</th>"
                   + "".join(f"<td>{_card_value(cards[m][label]) if label in cards[m] else '—'}</td>" for m in columns) + "</tr>"
                   for label in labels)
    return f'<h2 id="circuit-cards">Circuit cards</h2><table class="cards">{head}{body}</table>'


def _interrupted_banner(run: RunInfo, total: int) -> str:
    if not run.interrupted:
        return ""
    return f'<div class="interrupted">interrupted: {run.not_run} of {total} claims not run</div>'


def _page(title: str, banners: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n{banners}\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def render_html(run: RunInfo, results: list[ClaimResult], comparison: str = "") -> str:
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    planted = sorted({r.spec for r in results if r.planted})
    banners = _interrupted_banner(run, len(results))
    if planted:
        banners += f'<div class="banner">⚠ {html.escape(PLANTED_WARNING)}<br>Planted subjects in this run: {html.escape(", ".join(planted))}</div>'
    versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    header = (
        f"<p>Run {html.escape(run.started_utc)} → {html.escape(run.finished_utc)}<br>"
        f"Models: {html.escape(', '.join(run.models))}<br>Versions: {html.escape(versions)}<br>"
        f"Command: <code>{html.escape(run.command)}</code><br>"
        + " · ".join(f'<span class="{_css(s)}">{counts[s]} {s}</span>' for s in STATUSES)
        + "</p>"
    )
    rows = results_to_dict(run, results)["results"]
    models = list(dict.fromkeys([*run.models, *(r.spec for r in results)]))
    sections = ["<h2>Overview</h2>" + render_matrix(rows, models), render_cards(rows, models), comparison]
    columns = ["Claim", "Model", "Quantity", "Measured", "Thesis", "Threshold", "Why", "Status", "Figure"]
    thead = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    by_claim: dict[str, list[ClaimResult]] = {}
    for result in sorted(results, key=lambda r: r.claim):
        by_claim.setdefault(result.claim, []).append(result)
    for claim, claim_results in by_claim.items():
        body = "\n".join(_result_rows(r) for r in claim_results)
        sections.append(f'<h2 id="{html.escape(claim)}">{html.escape(claim)}</h2>\n<table>{thead}\n{body}</table>')
    title = "Claims report: IOI circuits in TinyStories-8M vs GPT-2 small"
    return _page(title, banners, header + "\n" + "\n".join(s for s in sections if s))


# --- writing: checked at the start of a run, put in place atomically ---


def check_report_dir(path) -> Path:
    """The resolved report directory if a report can be put there, else ReportDirError (one line).

    It may not exist yet (its nearest existing ancestor must be a writable directory); an existing one
    must hold nothing but an older report, since a new report replaces the directory as a whole."""
    directory = Path(path).resolve()
    if directory.exists() and not directory.is_dir():
        raise ReportDirError(f"{directory} is a file, not a directory")
    if directory.is_dir():
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in REPORT_FILES)
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise ReportDirError(f"{directory} holds files that are not a claims report ({shown}); a report replaces "
                                 "its directory as a whole, so choose a new or empty directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ReportDirError(f"{directory} is not writable")
    ancestor = directory.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ReportDirError(f"{directory} cannot be created: {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ReportDirError(f"{directory} cannot be written: {ancestor} is not writable")
    return directory


_STAGING, _REPLACED = "staging", "replaced"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _sweep_leftovers(directory: Path) -> None:
    """Delete what killed writers left beside `directory`: `.NAME.staging-PID-*` (never put in place)
    and `.NAME.replaced-PID-*` (an older report moved aside; it is about to be replaced anyway)."""
    prefix = f".{directory.name}."
    for entry in directory.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        kind, _, rest = entry.name[len(prefix):].partition("-")
        pid = rest.split("-")[0]
        if kind in (_STAGING, _REPLACED) and pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def write_directory_atomically(directory, files: dict[str, str]) -> Path:
    """Make `directory` hold exactly `files` (name -> text): staged in a sibling, then renamed into place.
    An existing directory (an older report) is moved aside until the new one is in place, then deleted.
    Raises ReportWriteError (one line) and leaves the old directory as it was when anything fails."""
    try:
        directory = check_report_dir(directory)  # again: the place may have changed since the run started
    except ReportDirError as err:
        raise ReportWriteError(f"cannot write the report: {err}") from None
    staged = None
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        _sweep_leftovers(directory)
        staged = directory.parent / f".{directory.name}.{_STAGING}-{os.getpid()}-{secrets.token_hex(4)}"
        staged.mkdir()  # not mkdtemp: its mode 0700 would make the report private
        for name, text in files.items():
            (staged / name).write_text(text, encoding="utf-8")
        _pause_for_fault_injection(staged)
        if directory.exists():
            aside = staged.with_name(staged.name.replace(f".{_STAGING}-", f".{_REPLACED}-", 1))
            directory.rename(aside)
            try:
                staged.rename(directory)
            except BaseException:
                aside.rename(directory)  # the new report cannot go in place: the old one stays
                raise
            shutil.rmtree(aside, ignore_errors=True)
        else:
            staged.rename(directory)
    except BaseException as err:  # also Ctrl-C: no staging directory is left behind
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        if not isinstance(err, OSError):
            raise
        where = f" ({err.filename})" if err.filename else ""
        raise ReportWriteError(f"cannot write the report to {directory}: {err.strerror or err}{where}") from err
    return directory


def _pause_for_fault_injection(staged: Path) -> None:
    flag = os.environ.get(PAUSE_AFTER_STAGING_ENV)
    if flag:
        Path(flag).write_text(str(staged))
        time.sleep(600)


def write_report(run: RunInfo, results: list[ClaimResult], directory, changes: pd.DataFrame | None = None,
                 baseline_label: str = "") -> Path:
    """Put index.html and results.json (and, with `changes` from compare_results, comparison.csv)
    into `directory`, replacing any older report there as a whole; returns the index.html path.
    Raises ReportWriteError when the directory cannot be written (nothing is half-written)."""
    files = {RESULTS_FILE: results_json(results_to_dict(run, results))}
    comparison = ""
    if changes is not None:
        files["comparison.csv"] = changes.to_csv(index=False)
        comparison = render_comparison(changes, baseline_label)
    files["index.html"] = render_html(run, results, comparison)
    return write_directory_atomically(directory, files) / "index.html"


# --- merging several runs into one page ---


def render_merged(runs: list[tuple[str, dict]]) -> str:
    """One page for several runs (label, results.json document): the claims x models matrix and the
    circuit cards side by side. A model found in more than one run gets one column per run."""
    owners: dict[str, list[str]] = {}
    for label, document in runs:
        for row in document["results"]:
            owners.setdefault(row["spec"], [])
            if label not in owners[row["spec"]]:
                owners[row["spec"]].append(label)
    rows, models, summaries = [], [], []
    for label, document in runs:
        for row in document["results"]:
            spec = row["spec"] if len(owners[row["spec"]]) == 1 else f"{row['spec']} ({label})"
            rows.append({**row, "spec": spec})
            models.append(spec)
        run = document["run"]
        stopped = f" · interrupted: {run.get('not_run', 0)} not run" if run.get("interrupted") else ""
        summaries.append(f"<li><code>{html.escape(label)}</code>: {html.escape(str(run.get('started_utc', '')))} · "
                         f"models {html.escape(', '.join(map(str, run.get('models', []))))}{html.escape(stopped)}</li>")
    models = list(dict.fromkeys(models))
    banners = ""
    if any(document.get("planted_in_run") for _, document in runs):
        banners = f'<div class="banner">⚠ {html.escape(PLANTED_WARNING)}</div>'
    body = (f"<p>{len(runs)} runs merged:</p><ul>{''.join(summaries)}</ul>"
            "<h2>Claims x models</h2>" + render_matrix(rows, models, link=False) + render_cards(rows, models))
    return _page("Claims across models: IOI circuits in the TinyStories family and GPT-2 small", banners, body)


def merge_reports(run_paths, out_dir) -> Path:
    """Merge runs (results.json files or their directories) into `out_dir`/index.html; returns its path.
    Raises ResultsFileError for a bad run, ReportDirError for an unusable or clashing `out_dir`."""
    out = check_report_dir(out_dir)
    runs = []
    for path in run_paths:
        file = results_file(path).resolve()
        if file.parent == out:
            raise ReportDirError(f"{out} is one of the runs being merged; merging into it would replace that run")
        runs.append((str(path), load_results(file)))
    if not runs:
        raise ReportDirError("no runs to merge")
    return write_directory_atomically(out, {"index.html": render_merged(runs)}) / "index.html"


def expand_runs(patterns: list[str], out_dir) -> list[str]:
    """RUN arguments with their wildcards expanded here (tox runs commands without a shell); the output
    directory a pattern such as reports/tox-* also matches on a re-run is not a run."""
    out = Path(out_dir).resolve()
    runs = []
    for pattern in patterns:
        if not any(c in pattern for c in "*?["):
            runs.append(pattern)
            continue
        matches = [m for m in sorted(glob.glob(pattern)) if Path(m).resolve() != out]
        if not matches:
            raise ReportDirError(f"{pattern} matches no run")
        runs += matches
    return runs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mechinterp.report", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    merge = commands.add_parser("merge", help="merge several runs into one page: claims x models, circuit cards side by side")
    merge.add_argument("runs", nargs="+", metavar="RUN", help="a run's directory or its results.json (e.g. reports/tox-*)")
    merge.add_argument("--out", required=True, metavar="DIR", help="where to write the merged index.html (replaced as a whole)")
    merge.add_argument("--strict", action="store_true",
                       help="exit 1 when a merged claim failed or errored, or a run was interrupted (the page is written first)")
    args = parser.parse_args(argv)
    try:
        runs = expand_runs(args.runs, args.out)
        index = merge_reports(runs, args.out)
    except (ResultsFileError, ReportDirError, ReportWriteError) as err:
        print(f"merge: {err}", file=sys.stderr)
        return 2
    print(f"merged report: {index}")
    problems = [f"{run}: {line}" for run in runs for line in run_problems(load_results(results_file(run)))]
    for line in problems:
        print(line)
    return 1 if args.strict and problems else 0


def run_problems(document: dict) -> list[str]:
    """One line per claim that failed or errored in a run, and one if the run was interrupted: what a
    merged page must not let pass as green (`merge --strict`)."""
    lines = [f"{row['claim']} on {row['spec']}: {row['status']}" for row in document["results"]
             if row["status"] in ("failed", "error")]
    if document["run"].get("interrupted"):
        lines.append(f"interrupted: {document['run'].get('not_run', '?')} claims not run")
    return lines


if __name__ == "__main__":
    sys.exit(main())
