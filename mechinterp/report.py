"""The claims report: a self-contained index.html and a machine-readable results.json.

One ClaimResult per (claim, model): its status and, per quantity, the measured value beside the
thesis value and the threshold row. Figures are embedded as base64 PNG so the page needs nothing
else (no CDN, no side files). When a planted model is among the subjects, the page says loudly that
those rows check the suite, not the real models. `compare_results` diffs two results.json files
(regression mode: `pytest claims --baseline OLD/results.json` adds the diff to the page).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

STATUSES = ("passed", "failed", "known gap", "skipped", "error", "not run")
VERSIONED_PACKAGES = ("torch", "transformer_lens", "sae_lens", "transformers")
PLANTED_WARNING = (
    "Synthetic models with planted circuits: these rows are a check of the suite itself "
    "(it finds circuits that were put there by hand), not evidence about the real models."
)


@dataclass
class QuantityResult:
    """One threshold row evaluated (or, with op None, a measured value that has no row)."""

    quantity: str
    measured: float | None  # None: not measured (skipped, errored, or missing from Measured)
    thesis_value: float | None = None
    op: str | None = None
    threshold: float | None = None
    tolerance: float | None = None
    rule: str = ""  # Threshold.describe()
    why: str = ""
    passed: bool | None = None  # None: not evaluated


@dataclass
class ClaimResult:
    claim: str
    spec: str  # the --model value, e.g. "planted:tinystories-8m"
    real_model: str  # whose threshold rows apply, e.g. "tiny-stories-8M"
    planted: bool
    status: str  # one of STATUSES
    message: str = ""  # skip reason, failure or error message
    quantities: list[QuantityResult] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    figure_png: bytes | None = None
    nodeid: str = ""


@dataclass
class RunInfo:
    started_utc: str
    finished_utc: str
    models: list[str]
    command: str = ""
    versions: dict[str, str] = field(default_factory=dict)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def package_versions(names=VERSIONED_PACKAGES) -> dict[str, str]:
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def figure_to_png(figure) -> bytes:
    """PNG bytes of a matplotlib Figure (rendered with Agg; the figure is closed if pyplot owns it)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return buffer.getvalue()


# --- results.json ---


def _jsonable(value):
    """json.dumps fallback for tensors, numpy scalars/arrays and paths in `details`."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def results_to_dict(run: RunInfo, results: list[ClaimResult]) -> dict:
    rows = []
    for result in results:
        row = asdict(result)
        row["has_figure"] = row.pop("figure_png") is not None
        rows.append(row)
    return {
        "run": asdict(run),
        "planted_in_run": any(r.planted for r in results),
        "counts": {s: sum(r.status == s for r in results) for s in STATUSES},
        "results": rows,
    }


def load_results(path_or_dict) -> dict:
    if isinstance(path_or_dict, dict):
        return path_or_dict
    path = Path(path_or_dict)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json at {path}")
    return json.loads(path.read_text())


# --- index.html ---

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}
th,td{border:1px solid #ccc;padding:4px 6px;vertical-align:top;font-size:14px}
th{background:#f0f0f0;text-align:left}
.num{text-align:right;font-family:monospace}
.passed{background:#dff0d8}.failed{background:#f2dede}.error{background:#f7c6a3}
.skipped,.not-run{background:#eee}.known-gap{background:#fcf8e3}
.banner{background:#fff3cd;border:3px solid #d39e00;padding:1em;font-size:18px;font-weight:bold;margin:1em 0}
.tag{background:#d39e00;color:white;border-radius:3px;padding:1px 5px;font-size:12px;font-weight:bold}
.why{font-size:12px;color:#444;max-width:30em}
pre{white-space:pre-wrap;font-size:12px;margin:0}
img{max-width:480px}
"""


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{value:.4g}" if isinstance(value, (int, float)) else html.escape(str(value))


def _status_cell(result: ClaimResult, rowspan: int) -> str:
    css = result.status.replace(" ", "-")
    message = f"<pre>{html.escape(result.message)}</pre>" if result.message else ""
    return f'<td rowspan="{rowspan}" class="{css}"><b>{html.escape(result.status)}</b>{message}</td>'


def _result_rows(result: ClaimResult) -> str:
    quantities = result.quantities or [QuantityResult(quantity="—", measured=None, rule="—")]
    span = len(quantities)
    tag = ' <span class="tag" title="' + html.escape(PLANTED_WARNING) + '">PLANTED: synthetic, checks the suite</span>' if result.planted else ""
    model = html.escape(result.spec) + tag
    if result.real_model and result.real_model != result.spec:
        model += f"<br><small>rows of {html.escape(result.real_model)}</small>"
    figure = ""
    if result.figure_png:
        encoded = base64.b64encode(result.figure_png).decode("ascii")
        figure = f'<img alt="figure for {html.escape(result.claim)} on {html.escape(result.spec)}" src="data:image/png;base64,{encoded}">'
    if result.details:
        figure += f"<details><summary>details</summary><pre>{html.escape(json.dumps(result.details, indent=1, default=_jsonable))}</pre></details>"
    rows = []
    for i, q in enumerate(quantities):
        verdict = {True: "✓", False: "✗", None: ""}[q.passed]
        cells = [f'<td class="num">{_fmt(q.measured)} {verdict}</td>', f'<td class="num">{_fmt(q.thesis_value)}</td>',
                 f"<td>{html.escape(q.rule or '(no threshold row: for information)')}</td>", f'<td class="why">{html.escape(q.why)}</td>']
        head = (f'<td rowspan="{span}">{html.escape(result.claim)}</td><td rowspan="{span}">{model}</td>') if i == 0 else ""
        tail = (_status_cell(result, span) + f'<td rowspan="{span}">{figure}</td>') if i == 0 else ""
        rows.append(f"<tr>{head}<td>{html.escape(q.quantity)}</td>{''.join(cells)}{tail}</tr>")
    return "\n".join(rows)


def _overview(by_claim: dict[str, list[ClaimResult]], models: list[str]) -> str:
    """One line per claim, one column per model: the status, linking to the claim's table."""
    head = "<tr><th>Claim</th>" + "".join(f"<th>{html.escape(m) or '(no model: collection)'}</th>" for m in models) + "</tr>"
    lines = []
    for claim, claim_results in by_claim.items():
        status = {}
        for r in claim_results:  # several tests of one claim on one model: the worst status shows
            status[r.spec] = max(status.get(r.spec, "passed"), r.status, key=_SEVERITY.index)
        cells = "".join(f'<td class="{status[m].replace(" ", "-")}">{status[m]}</td>' if m in status else "<td>—</td>" for m in models)
        lines.append(f'<tr><td><a href="#{html.escape(claim)}">{html.escape(claim)}</a></td>{cells}</tr>')
    return f"<table>{head}{''.join(lines)}</table>"


_SEVERITY = ("passed", "skipped", "not run", "known gap", "failed", "error")


def render_html(run: RunInfo, results: list[ClaimResult], comparison: str = "") -> str:
    counts = {s: sum(r.status == s for r in results) for s in STATUSES}
    planted = sorted({r.spec for r in results if r.planted})
    banner = ""
    if planted:
        banner = f'<div class="banner">⚠ {html.escape(PLANTED_WARNING)}<br>Planted subjects in this run: {html.escape(", ".join(planted))}</div>'
    versions = ", ".join(f"{k} {v}" for k, v in run.versions.items())
    header = (
        f"<p>Run {html.escape(run.started_utc)} → {html.escape(run.finished_utc)}<br>"
        f"Models: {html.escape(', '.join(run.models))}<br>Versions: {html.escape(versions)}<br>"
        f"Command: <code>{html.escape(run.command)}</code><br>"
        + " · ".join(f'<span class="{s.replace(" ", "-")}">{counts[s]} {s}</span>' for s in STATUSES)
        + "</p>"
    )
    sections = []
    by_claim: dict[str, list[ClaimResult]] = {}
    for result in sorted(results, key=lambda r: r.claim):
        by_claim.setdefault(result.claim, []).append(result)
    columns = ["Claim", "Model", "Quantity", "Measured", "Thesis", "Threshold", "Why", "Status", "Figure"]
    thead = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    models = list(dict.fromkeys([*run.models, *(r.spec for r in results)]))
    sections.append("<h2>Overview</h2>" + _overview(by_claim, models))
    if comparison:
        sections.append(comparison)
    for claim, claim_results in by_claim.items():
        body = "\n".join(_result_rows(r) for r in claim_results)
        sections.append(f'<h2 id="{html.escape(claim)}">{html.escape(claim)}</h2>\n<table>{thead}\n{body}</table>')
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Claims report</title>"
        f"<style>{_CSS}</style></head><body>\n{banner}\n<h1>Claims report: IOI circuits in TinyStories-8M vs GPT-2 small</h1>\n"
        f"{header}\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def write_report(run: RunInfo, results: list[ClaimResult], directory, baseline=None) -> Path:
    """Write index.html and results.json into `directory` (created); returns the index.html path.

    With `baseline` (a results.json or its run directory: regression mode), the page gets a section
    listing what changed since then, also written as comparison.csv."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    current = json.loads(json.dumps(results_to_dict(run, results), default=_jsonable))
    (directory / "results.json").write_text(json.dumps(current, indent=1))
    comparison = ""
    if baseline is not None:
        changes = compare_results(current, baseline)
        changes.to_csv(directory / "comparison.csv", index=False)
        comparison = render_comparison(changes, str(baseline))
    index = directory / "index.html"
    index.write_text(render_html(run, results, comparison), encoding="utf-8")
    return index


# --- regression: compare two runs ---

COMPARE_COLUMNS = [
    "claim", "spec", "test", "role", "quantity", "change", "status_baseline", "status_current", "measured_baseline", "measured_current",
]


def _flatten(results: dict) -> dict[tuple[str, str, str, str], tuple[str, float | None, str]]:
    """(claim, spec, test, quantity) -> (status, measured, role). A claim may have several tests (the
    test function's name tells them apart); role is what an E3 claim's details name."""
    flat = {}
    for r in results["results"]:
        details = r.get("details")
        role = details.get("role", "") if isinstance(details, dict) else ""
        test = (r.get("nodeid") or "").split("::")[-1].split("[")[0]
        for q in r["quantities"] or [{"quantity": "", "measured": None}]:
            flat[(r["claim"], r["spec"], test, q["quantity"])] = (r["status"], q["measured"], role)
    return flat


def _values_differ(a: float | None, b: float | None, atol: float, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) != math.isnan(b)
    return abs(a - b) > atol + rtol * abs(b)


def compare_results(current, baseline, atol: float = 1e-6, rtol: float = 0.0) -> pd.DataFrame:
    """Rows (claim, model, test, quantity) whose status or measured value changed from `baseline` to `current`.

    `current` and `baseline` are results.json paths, run directories or loaded dicts. `change` is one
    of 'status', 'value', 'new' (only in current), 'gone' (only in baseline). Empty when nothing changed.
    """
    now, before = _flatten(load_results(current)), _flatten(load_results(baseline))
    rows = []
    for key in sorted(now.keys() | before.keys()):
        status_now, value_now, role_now = now.get(key, (None, None, ""))
        status_before, value_before, role_before = before.get(key, (None, None, ""))
        if key not in before:
            change = "new"
        elif key not in now:
            change = "gone"
        elif status_now != status_before:
            change = "status"
        elif _values_differ(value_now, value_before, atol, rtol):
            change = "value"
        else:
            continue
        claim, spec, test, quantity = key
        rows.append([claim, spec, test, role_now or role_before, quantity, change, status_before, status_now, value_before, value_now])
    return pd.DataFrame(rows, columns=COMPARE_COLUMNS)


def comparison_summary(changes: pd.DataFrame) -> list[str]:
    """One line per (claim, model, test): the role's feature index and status change, and how many values moved."""
    if changes.empty:
        return ["no claim changed status or measured value"]
    lines = []
    tests_per_claim = changes.groupby("claim")["test"].nunique()
    for (claim, spec, test), rows in changes.groupby(["claim", "spec", "test"], sort=True):
        parts = []
        feature = rows[rows["quantity"] == "feature_index"]
        if len(feature):
            parts.append(f"feature {_index(feature['measured_baseline'].iloc[0])} -> {_index(feature['measured_current'].iloc[0])}")
        before, after = _first(rows["status_baseline"]), _first(rows["status_current"])
        if before != after:
            parts.append(f"status {before} -> {after}")
        values = rows[rows["quantity"] != "feature_index"]
        moved = sum(_values_differ(_number(a), _number(b), 0.0, 0.0) for a, b in zip(values["measured_current"], values["measured_baseline"]))
        parts.append(f"{moved} value(s) changed")
        role = rows["role"].iloc[0]
        which = f" {test}" if tests_per_claim[claim] > 1 else ""
        lines.append(f"{claim} [{spec}]{which}{' role ' + role if role else ''}: " + "; ".join(parts))
    return lines


def _first(statuses: pd.Series) -> str:
    present = statuses.dropna()
    return str(present.iloc[0]) if len(present) else "absent"


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _index(value) -> str:
    return "none" if value is None or pd.isna(value) else str(int(value))


def render_comparison(changes: pd.DataFrame, baseline_label: str) -> str:
    """The regression section of index.html: summary lines, then every changed row."""
    items = "".join(f"<li>{html.escape(line)}</li>" for line in comparison_summary(changes))
    table = changes.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4g}", border=0) if not changes.empty else ""
    return f"<h2>Changes since baseline</h2><p>Baseline: <code>{html.escape(baseline_label)}</code></p><ul>{items}</ul>{table}"
