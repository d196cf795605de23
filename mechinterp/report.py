"""The claims report: a self-contained index.html beside results.json, written atomically.

The page (layout in templates/report.html.j2, jinja2 with autoescaping; each claim's statement from its
declaration, claims.claim.Claim) opens with the overview: per claim its finding in words and per model its status
with the key value beside the thesis value, filterable by status and model. Then one section per claim:
per model a table quantity | measured | thesis | rule | status, each reason under its row. Figures are
embedded as base64 PNG and a Content-Security-Policy forbids any load, so nothing is fetched.
When a planted model is among the subjects, the page says loudly that those rows check the suite, not
the real models. The results model and results.json live in mechinterp/results.py, the
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
import tempfile
import time
from pathlib import Path

import jinja2
from markupsafe import Markup

from mechinterp.compare import Comparison, compare_results, comparison_summary, render_comparison  # noqa: F401 (re-exported)
from mechinterp.pids import pid_alive
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
# An E3 ablation acts only on what the SAE reconstructs: below this held-out explained variance more than a fifth
# of the residual's variance is in the SAE's error term, which a feature ablation never touches, so the report marks
# it (a reading aid, not a threshold: no claim fails on it). LM SAEs in the literature report 0.8 and above.
LOW_EXPLAINED_VARIANCE = 0.8
REPORT_FILES = ("index.html", RESULTS_FILE, "comparison.csv")
CIRCUIT_CARD = "circuit-card"  # the claim id whose details["card"] the matrix pages show side by side
# Fault injection for tests: write_report writes the staged directory's path into this file, then waits
# (so a test can kill the run between staging and renaming).
PAUSE_AFTER_STAGING_ENV = "MECHINTERP_TEST_PAUSE_AFTER_STAGING"


class ReportDirError(ValueError):
    """A --report-dir that cannot take a report (one line, raised at the start of a run)."""


class ReportWriteError(RuntimeError):
    """Writing the report failed; nothing was put in place (one line naming the directory and why)."""


class PageRenderError(ReportWriteError):
    """The page could not be rendered, but results.json was written in the report directory (the message says where)."""


# --- index.html: mechinterp/templates/report.html.j2 holds the layout, this part its content ---

TEMPLATES = Path(__file__).with_name("templates")


def claim_statements(results) -> dict[str, tuple[str, str]]:
    """Claim ID -> (the paper's finding in a sentence, where the paper shows it), as each claim's record carries them."""
    statements: dict[str, tuple[str, str]] = {}
    for result in results:
        if result.statement and result.claim not in statements:
            statements[result.claim] = (result.statement, result.where)
    return statements


def _thesis_inconsistencies() -> list[dict]:
    """Where the thesis contradicts itself: [{claims, quantities, note}], from templates/thesis_inconsistencies.json."""
    return json.loads((TEMPLATES / "thesis_inconsistencies.json").read_text(encoding="utf-8"))["notes"]


THESIS_INCONSISTENCIES = _thesis_inconsistencies()


def inconsistencies(claim: str, quantity: str | None = None) -> list[str]:
    """The thesis inconsistencies touching `claim`'s row `quantity`, or (quantity None) the claim as a whole."""
    return [entry["note"] for entry in THESIS_INCONSISTENCIES if claim in entry["claims"]
            and (quantity in entry["quantities"] if quantity is not None else not entry["quantities"])]


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, bool):
        return str(value)
    return f"{value:.4g}" if isinstance(value, (int, float)) else str(value)


def _css(status: str) -> str:
    return status.replace(" ", "-")


_ENVIRONMENT = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True,
                                  lstrip_blocks=True, undefined=jinja2.StrictUndefined)
_ENVIRONMENT.filters["css"] = _css
_ENVIRONMENT.globals.update(PLANTED_WARNING=PLANTED_WARNING, CALIBRATED_NOTE=CALIBRATED_NOTE,
                            LOW_EXPLAINED_VARIANCE=LOW_EXPLAINED_VARIANCE)


def _template():
    return _ENVIRONMENT.get_template("report.html.j2")


def _result_view(result: ClaimResult) -> dict:
    """What the template shows of one claim test: its model, status, quantities, figure and details."""
    quantities = result.quantities or [QuantityResult(quantity="—", measured=None, rule="—")]
    figure = ""
    if result.figure_png:
        figure = "data:image/png;base64," + base64.b64encode(result.figure_png).decode("ascii")
    details = result.details if isinstance(result.details, dict) else {}
    return {
        "spec": result.spec, "planted": result.planted, "status": result.status, "message": result.message,
        "identity": result.identity, "figure": figure,
        "seconds": "" if result.seconds is None else f"{result.seconds:.1f} s",
        "stages": "; ".join(f"{name} {seconds:.1f} s" for name, seconds in (result.stage_seconds or {}).items()),
        "rows_of": result.real_model if result.real_model and result.real_model != result.spec else "",
        "details": json.dumps(result.details, indent=1, default=to_jsonable) if result.details else "",
        "seeds": _seed_view(details.get("sae_seeds")),
        "saes": _sae_view(details),
        "robustness": _robustness_view(details.get("robustness")),
        "quantities": [{"quantity": q.quantity, "measured": _fmt(q.measured), "thesis": _fmt(q.thesis_value),
                        "rule": q.rule or "(no threshold row: for information)", "why": q.why,
                        "passed": q.passed, "verdict": {True: "✓", False: "✗", None: ""}[q.passed],
                        "calibrated": getattr(q, "calibrated", False),
                        "inconsistencies": inconsistencies(result.claim, q.quantity)} for q in quantities],
    }


def _robustness_view(block: dict | None) -> dict | None:
    """A claim's values over the IOI distribution (mechinterp.robustness.verdicts) as table rows."""
    if not block:
        return None

    def pair(values) -> str:
        return "—" if not values else f"[{_fmt(values[0])}, {_fmt(values[1])}]"

    rows = [{"quantity": r["quantity"], "rule": r.get("rule", ""), "thesis": _fmt(r.get("thesis")),
             "protocol": _fmt(r.get("protocol")), "distribution": f"{_fmt(r.get('distribution'))} {pair(r.get('interval'))}",
             "held_out": pair(r.get("held_out_range")), "verdict": r.get("verdict", "")}
            for r in block.get("rows", []) + block.get("without_row", [])]
    roles = [f"{r['role']}: the claim's {r['claim_head']}, on the distribution {r['distribution_head']}"
             f" ({'same' if r['same_head'] else 'DIFFERENT'})" for r in block.get("roles", [])]
    return {"verdict": block.get("verdict", ""), "distribution": block.get("distribution", ""), "rows": rows, "roles": roles}


def _seed_view(table: dict | None) -> dict | None:
    """A multi-seed E3 measurement (claims.framework.seed_table) as rows: quantity, value per seed, seeds passing."""
    if not table:
        return None
    n = len(table["seeds"])
    passing = table.get("seeds_passing", {})
    return {"seeds": table["seeds"], "rule": table["rule"],
            "rows": [{"quantity": q, "cells": [_fmt(v) for v in values],
                      "passing": f"{passing[q]}/{n}" if q in passing else "", "all": passing.get(q) == n}
                     for q, values in table["values"].items()]}


def _sae_view(details: dict | None) -> list[dict]:
    """The SAE an E3 claim measured with, per seed (details' sae_hook, sae_architecture, sae_width, sae_quality):
    hook, architecture (absent from runs before it was recorded), width, held-out explained variance and L0, and
    whether that variance is low (LOW_EXPLAINED_VARIANCE)."""
    if not details or "sae_hook" not in details:
        return []
    per_seed = details.get("sae_seed_details") or {"": details}
    views = []
    for seed, d in per_seed.items():
        quality = d.get("sae_quality") or {}
        variance = quality.get("explained_variance")
        views.append({"seed": seed, "hook": d.get("sae_hook"), "architecture": d.get("sae_architecture"),
                      "width": d.get("sae_width"),
                      "explained_variance": _fmt(variance) if variance is not None else "not measured",
                      "l0": _fmt(quality["l0"]) if "l0" in quality else "not measured",
                      "low": variance is not None and variance < LOW_EXPLAINED_VARIANCE})
    return views


def _result_rows(result: ClaimResult) -> str:
    """One claim test's block of the page (its model, status, quantity table, figure)."""
    page = _template().make_module({**_PAGE_DEFAULTS, "title": "", "overview_title": "", "overview": overview([], [])})
    return str(page.result_block(result.claim, _result_view(result)))


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


def overview(rows: list[dict], models: list[str]) -> dict:
    """Claims x models: per cell the worst status of that claim's tests on that model and the first
    measured value with its thesis value; per claim its statement. `rows` are results.json rows."""
    cells: dict[tuple[str, str], tuple[str, str]] = {}  # (claim, spec) -> (status, key value)
    statements: dict[str, tuple[str, str]] = {}
    for row in sorted(rows, key=lambda r: r["claim"]):
        if row.get("statement") and row["claim"] not in statements:
            statements[row["claim"]] = (str(row["statement"]), str(row.get("where", "")))
        key = (row["claim"], row["spec"])
        status, value = cells.get(key, ("passed", ""))
        worst = max(status, row["status"], key=lambda s: _SEVERITY.index(s) if s in _SEVERITY else len(_SEVERITY))
        cells[key] = (worst, value or _key_value(row))
    lines = []
    for claim in dict.fromkeys(claim for claim, _ in cells):
        statement, where = statements.get(claim, ("", ""))
        line = [{"model": m, "status": cells[(claim, m)][0], "value": cells[(claim, m)][1]} if (claim, m) in cells else None
                for m in models]
        lines.append({"claim": claim, "statement": statement, "where": where, "cells": line})
    statuses = [s for s in STATUSES if any(status == s for status, _ in cells.values())]
    return {"models": models, "rows": lines, "statuses": statuses}


def _card_value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_card_value(v) for v in value)
    return _fmt(value)


def circuit_cards(rows: list[dict], models: list[str]) -> dict | None:
    """The circuit cards (rows of claim 'circuit-card', details['card']: label -> value or short list),
    one column per model; None when there are none."""
    cards = {}
    for row in rows:
        card = (row.get("details") or {}).get("card")
        if row["claim"] == CIRCUIT_CARD and isinstance(card, dict):
            cards.setdefault(row["spec"], card)
    if not cards:
        return None
    columns = [m for m in models if m in cards]
    labels = list(dict.fromkeys(label for m in columns for label in cards[m]))
    return {"models": columns, "rows": [(str(label), [_card_value(cards[m][label]) if label in cards[m] else "—" for m in columns])
                                        for label in labels]}


_PAGE_DEFAULTS = {"interrupted": "", "run_notes": [], "planted_warning": "", "planted_specs": [], "run": None, "merged_runs": [],
                  "cards": None, "comparison": "", "sections": [], "link": True}


def _page(**content) -> str:
    return _template().render({**_PAGE_DEFAULTS, **content})


def render_html(run: RunInfo, results: list[ClaimResult], comparison: str = "", run_notes: list[str] = ()) -> str:
    planted = sorted({r.spec for r in results if r.planted})
    rows = results_to_dict(run, results)["results"]
    models = list(dict.fromkeys([*run.models, *(r.spec for r in results)]))
    by_claim: dict[str, list[ClaimResult]] = {}
    for result in sorted(results, key=lambda r: r.claim):
        by_claim.setdefault(result.claim, []).append(result)
    statements = claim_statements(results)
    sections = [{"claim": claim, "statement": statements.get(claim, ("", ""))[0], "where": statements.get(claim, ("", ""))[1],
                 "inconsistencies": inconsistencies(claim), "results": [_result_view(r) for r in claim_results]}
                for claim, claim_results in by_claim.items()]
    return _page(
        title="Claims report: IOI circuits in TinyStories-8M vs GPT-2 small",
        interrupted=f"interrupted: {run.not_run} of {len(results)} claims not run" if run.interrupted else "",
        planted_warning=PLANTED_WARNING if planted else "", planted_specs=planted,
        run=run, versions=", ".join(f"{k} {v}" for k, v in run.versions.items()), run_notes=list(run_notes),
        counts=[(s, sum(r.status == s for r in results)) for s in STATUSES],
        overview_title="Overview", overview=overview(rows, models), cards=circuit_cards(rows, models),
        comparison=Markup(comparison),  # compare.render_comparison escapes its own values
        sections=sections,
    )


def unapplied_known_gaps_note(gaps, collected, options: dict) -> str:
    """One line naming the known gaps (claims.thresholds.KNOWN_GAPS entries) of the collected (claim, --model)
    pairs that this run does not apply, because it sets an option (pytest dest name -> value, None when unset)
    they were not measured under (`unless_options`, e.g. --sae-config): those claim tests are checked plainly,
    so a failure there reads "failed", not "known gap". '' when every collected gap applies."""
    collected = set(collected)
    set_options = {name for name, value in options.items() if value is not None}
    unapplied = [gap for gap in gaps if (gap.claim, gap.model) in collected and set_options & set(gap.unless_options)]
    if not unapplied:
        return ""
    flags = sorted({"--" + name.replace("_", "-") for gap in unapplied for name in set_options & set(gap.unless_options)})
    pairs = ", ".join(f"{gap.claim} [{gap.model}]" for gap in unapplied)
    return (f"{len(unapplied)} known gap(s) not applied under {', '.join(flags)} (each was measured without it), so these "
            f"claim tests are checked plainly and a failure reads 'failed': {pairs}")


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
        _prove_writable(directory, f"{directory} is not writable")
        return directory
    ancestor = directory.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ReportDirError(f"{directory} cannot be created: {ancestor} is a file")
    _prove_writable(ancestor, f"{directory} cannot be written: {ancestor} is not writable")
    return directory


def _prove_writable(directory: Path, message: str) -> None:
    """Create and remove a file in `directory`: os.access says yes to root where writes fail (/proc)."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise ReportDirError(f"{message} ({err.strerror or err})") from None


_STAGING, _REPLACED = "staging", "replaced"


def _sweep_leftovers(directory: Path) -> None:
    """Delete what killed writers left beside `directory`: `.NAME.staging-PID-*` (never put in place)
    and `.NAME.replaced-PID-*` (an older report moved aside; it is about to be replaced anyway)."""
    prefix = f".{directory.name}."
    for entry in directory.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        kind, _, rest = entry.name[len(prefix):].partition("-")
        pid = rest.split("-")[0]
        if kind in (_STAGING, _REPLACED) and pid.isdigit() and not pid_alive(int(pid)):
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


def write_report(run: RunInfo, results: list[ClaimResult], directory, changes: Comparison | None = None,
                 baseline_label: str = "", run_notes: list[str] = ()) -> Path:
    """Put index.html and results.json (and, with `changes` from compare_results, comparison.csv)
    into `directory`, replacing any older report there as a whole; returns the index.html path.
    Raises ReportWriteError when the directory cannot be written (nothing is half-written), and when
    the page cannot be rendered (PageRenderError): then results.json (and comparison.csv) are written all the
    same, beside an index.html that says why, so a finished run's results are never lost to a bug of the page."""
    files = {RESULTS_FILE: results_json(results_to_dict(run, results))}
    if changes is not None:
        files["comparison.csv"] = changes.changes.to_csv(index=False)
    try:
        comparison = "" if changes is None else render_comparison(changes, baseline_label)
        files["index.html"] = render_html(run, results, comparison, run_notes)
    except Exception as err:  # jinja2 / pandas / matplotlib errors of the page, not of the results
        failure = f"{type(err).__name__}: {err}"
        files["index.html"] = ("<!DOCTYPE html><meta charset='utf-8'><title>claims report: page failed</title>"
                               f"<p>The page could not be rendered ({html.escape(failure)}); the results are in "
                               f"{RESULTS_FILE} beside this file.</p>")
        written = write_directory_atomically(directory, files)
        raise PageRenderError(f"the report page could not be rendered ({failure}); the results are saved in "
                               f"{written / RESULTS_FILE}") from err
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
        summaries.append({"label": label, "started": str(run.get("started_utc", "")), "models": list(map(str, run.get("models", []))),
                          "stopped": f" · interrupted: {run.get('not_run', 0)} not run" if run.get("interrupted") else ""})
    models = list(dict.fromkeys(models))
    planted = any(document.get("planted_in_run") for _, document in runs)
    return _page(title="Claims across models: IOI circuits in the TinyStories family and GPT-2 small",
                 planted_warning=PLANTED_WARNING if planted else "", merged_runs=summaries, link=False,  # no sections to link to
                 overview_title="Claims x models", overview=overview(rows, models), cards=circuit_cards(rows, models))


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
