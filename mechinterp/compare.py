"""Regression mode: what changed between a baseline run and this one.

`compare_results(current, baseline)` takes results.json documents (dicts, as `results.load_results`
gives them; paths are loaded for convenience) and returns one row per (claim, model, test, quantity)
whose status or measured value changed (with, for E3 over several SAE seeds, whether the change is beyond
the seed-to-seed spread). The claims plugin loads the baseline once at the start of
the run and computes the comparison once; the page, comparison.csv and the terminal lines all use it.
"""

from __future__ import annotations

import html
import math

import pandas as pd

from mechinterp.results import load_results

COMPARE_COLUMNS = [
    "claim", "spec", "test", "role", "quantity", "change", "status_baseline", "status_current", "measured_baseline", "measured_current",
    "seed_spread",
]


def _flatten(results: dict) -> dict[tuple[str, str, str, str], tuple[str, float | None, str, list | None]]:
    """(claim, spec, test, quantity) -> (status, measured, role, per-seed values or None). A claim may have
    several tests (the test function's name tells them apart); role is what an E3 claim's details name;
    an E3 claim measured over several SAE seeds has its values per seed (details['sae_seeds'])."""
    flat = {}
    for r in results["results"]:
        details = r.get("details")
        role = details.get("role", "") if isinstance(details, dict) else ""
        seeds = (details.get("sae_seeds") or {}).get("values", {}) if isinstance(details, dict) else {}
        test = (r.get("nodeid") or "").split("::")[-1].split("[")[0]
        for q in r["quantities"] or [{"quantity": "", "measured": None}]:
            flat[(r["claim"], r["spec"], test, q["quantity"])] = (r["status"], q.get("measured"), role, seeds.get(q["quantity"]))
    return flat


def seed_spread_verdict(before: list | None, now: list | None) -> str:
    """Whether a quantity measured over SAE seeds in both runs moved beyond the seed-to-seed spread: its
    mean over seeds changed by more than the larger of the two runs' ranges (max - min over seeds). ''
    unless both runs have two or more seeds' values."""
    before = [v for v in before or [] if v is not None and not math.isnan(v)]
    now = [v for v in now or [] if v is not None and not math.isnan(v)]
    if len(before) < 2 or len(now) < 2:
        return ""
    spread = max(max(before) - min(before), max(now) - min(now))
    shift = sum(now) / len(now) - sum(before) / len(before)
    where = "beyond" if abs(shift) > spread else "within"
    return f"{where} seed spread (mean moved {shift:+.3g}, spread {spread:.3g})"


def _values_differ(a: float | None, b: float | None, atol: float, rtol: float) -> bool:
    if a is None or b is None:
        return (a is None) != (b is None)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) != math.isnan(b)
    return abs(a - b) > atol + rtol * abs(b)


def compare_results(current, baseline, atol: float = 1e-6, rtol: float = 0.0) -> pd.DataFrame:
    """Rows (claim, model, test, quantity) whose status or measured value changed from `baseline` to `current`.

    `change` is one of 'status', 'value', 'new' (only in current), 'gone' (only in baseline). Empty
    when nothing changed.
    """
    now, before = _flatten(load_results(current)), _flatten(load_results(baseline))
    rows = []
    for key in sorted(now.keys() | before.keys()):
        status_now, value_now, role_now, seeds_now = now.get(key, (None, None, "", None))
        status_before, value_before, role_before, seeds_before = before.get(key, (None, None, "", None))
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
        rows.append([claim, spec, test, role_now or role_before, quantity, change, status_before, status_now, value_before, value_now,
                     seed_spread_verdict(seeds_before, seeds_now)])
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
        beyond = sum(verdict.startswith("beyond") for verdict in rows["seed_spread"])
        if any(rows["seed_spread"]):
            parts.append(f"{beyond} beyond the SAE seeds' spread")
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
