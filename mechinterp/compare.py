"""Regression mode: what changed between a baseline run and this one.

`compare_results(current, baseline)` takes results.json documents (dicts, as `results.load_results`
gives them; paths are loaded for convenience) and returns a Comparison: one row per threshold row
(claim, model, test, quantity, operator, threshold) whose outcome, pass/fail or measured value changed
(with, for E3 over several SAE seeds, whether the change is beyond the seed-to-seed spread), and notes
saying once what was left out of the comparison. By default only what both runs measured is compared:
the models both selected and the claim tests this run collected (a `-k e3` run against a full
baseline is compared on E3 only). The claims plugin loads the baseline once at the start of the run and
computes the comparison once; the page, comparison.csv and the terminal lines all use it.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from mechinterp.results import load_results

COMPARE_COLUMNS = [
    "claim", "spec", "test", "role", "quantity", "rule", "change", "status_baseline", "status_current",
    "passed_baseline", "passed_current", "measured_baseline", "measured_current", "seed_spread",
]
# A known gap is a failure the suite expects, and it is expected only under the options it was measured with
# (e.g. E3's default SAEs): the same failing rows are "known gap" in one run and "failed" in another. The
# comparison reads the outcome, so a relabelling alone is no change.
_OUTCOME = {"known gap": "failed"}
# Claim ids named in a note before it says "and N more": a note stays one line.
NOTE_NAMES = 8


@dataclass
class Comparison:
    """The rows that changed (COMPARE_COLUMNS) and notes on what was compared (each one line)."""

    changes: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.changes.empty


@dataclass(frozen=True)
class _Row:
    status: str
    passed: bool | None
    measured: float | None
    rule: str
    role: str
    seeds: list | None


def _test_name(result: dict) -> str:
    return (result.get("nodeid") or "").split("::")[-1].split("[")[0]


def _flatten(results: dict) -> dict[tuple, _Row]:
    """(claim, spec, test, quantity, op, threshold, occurrence) -> its _Row. A claim may have several tests
    (the test function's name tells them apart) and a quantity several threshold rows (E2.logit-diff's
    logit_diff: 'within' and '>'), so a row is keyed by its operator and threshold too (occurrence only
    separates exact repeats). Role is what an E3 claim's details name; an E3 claim measured over several
    SAE seeds has its values per seed (details['sae_seeds'])."""
    flat, seen = {}, Counter()
    for r in results["results"]:
        details = r.get("details")
        role = details.get("role", "") if isinstance(details, dict) else ""
        seeds = (details.get("sae_seeds") or {}).get("values", {}) if isinstance(details, dict) else {}
        for q in r["quantities"] or [{"quantity": ""}]:
            key = (r["claim"], r["spec"], _test_name(r), q["quantity"], q.get("op"), q.get("threshold"))
            flat[(*key, seen[key])] = _Row(r["status"], q.get("passed"), q.get("measured"), q.get("rule") or "", role,
                                           seeds.get(q["quantity"]))
            seen[key] += 1
    return flat


def _models(document: dict) -> list[str]:
    """The models a run selected, and any a row names beyond them (a hand-made or merged document)."""
    return list(dict.fromkeys([*document["run"].get("models", []), *(r["spec"] for r in document["results"])]))


def _names(items: Iterable[str]) -> str:
    items = list(dict.fromkeys(items))
    more = f" and {len(items) - NOTE_NAMES} more" if len(items) > NOTE_NAMES else ""
    return ", ".join(items[:NOTE_NAMES]) + more


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


def compare_results(current, baseline, atol: float = 1e-6, rtol: float = 0.0,
                    collected: Iterable[tuple[str, str, str]] | None = None, compare_all: bool = False) -> Comparison:
    """The threshold rows whose outcome, pass/fail or measured value changed from `baseline` to `current`.

    `change` is one of 'status' (the claim test's outcome: passed, failed, skipped, ...; a known gap is a
    failure), 'verdict' (the row's pass/fail), 'value', 'new' (only in current), 'gone' (only in baseline).
    Compared: the models both runs selected and the claim tests this run collected, `collected` as
    (claim, spec, test function name); by default those of `current`, which records every collected claim
    test, run or not; a test an interrupted run did not run is left out too. With `compare_all` every row of
    both runs is compared, one in a single run being new or gone. The notes say once what was left out, and
    which claims only changed label (known gap <-> failed).
    """
    current, baseline = load_results(current), load_results(baseline)
    now, before = _flatten(current), _flatten(baseline)
    notes = []
    models_now, models_before = _models(current), _models(baseline)
    shared = [m for m in models_now if m in models_before]
    if set(models_now) != set(models_before):
        which = "all of them (a model in one run only shows as new / gone)" if compare_all else (
            f"{', '.join(shared)} only" if shared else "nothing (no model in common)")
        notes.append(f"baseline has models {', '.join(models_before)}; this run {', '.join(models_now)}: comparing {which}")
    if not compare_all:
        collected = {(r["claim"], r["spec"], _test_name(r)) for r in current["results"]} if collected is None else set(collected)
        # an interrupted run's tests that never ran measured nothing: one note, not a "-> not run" line each
        not_run = {(r["claim"], r["spec"], _test_name(r)) for r in current["results"] if r["status"] == "not run" and r["spec"] in shared}
        if not_run:
            notes.append(f"{len(not_run)} claim test(s) did not run in this run (it was interrupted), so not compared: "
                         f"{_names(f'{claim} [{spec}]' for claim, spec, _ in sorted(not_run))}")
        compared = collected - not_run
        now = {k: v for k, v in now.items() if k[1] in shared and k[:3] not in not_run}
        left_out = sorted({k[:3] for k in before if k[1] in shared and k[:3] not in collected})
        before = {k: v for k, v in before.items() if k[1] in shared and k[:3] in compared}
        if left_out:
            # a claim with some tests collected and others not: the test names tell them apart
            partly = {claim for claim, _, _ in collected}
            names = (f"{claim} ({test})" if claim in partly else claim for claim, _, test in left_out)
            notes.append(f"{len(left_out)} claim test(s) of the baseline were not collected in this run (deselected, "
                         f"e.g. -k, or no longer in the suite), so not compared: {_names(names)}")
    rows, relabelled, flipped = [], set(), set()
    for key in sorted(now.keys() | before.keys(), key=lambda k: tuple("" if v is None else str(v) for v in k)):
        row_now, row_before = now.get(key), before.get(key)
        if row_now and row_before and row_now.status != row_before.status and _outcome(row_now.status) == _outcome(row_before.status):
            relabelled.add(key[:3])
        if row_before is None:
            change = "new"
        elif row_now is None:
            change = "gone"
        elif _outcome(row_now.status) != _outcome(row_before.status):
            change = "status"
        elif row_now.passed != row_before.passed:
            change = "verdict"
            flipped.add(key[:3])
        elif _values_differ(row_now.measured, row_before.measured, atol, rtol):
            change = "value"
        else:
            continue
        claim, spec, test, quantity = key[:4]
        either = row_now or row_before
        rows.append([claim, spec, test, either.role, quantity, either.rule, change,
                     *_pair(row_before, row_now, "status"), *_pair(row_before, row_now, "passed"),
                     *_pair(row_before, row_now, "measured"),
                     seed_spread_verdict(row_before and row_before.seeds, row_now and row_now.seeds)])
    same_rows_failing = sorted(relabelled - flipped)
    if same_rows_failing:
        notes.append(f"known gap in one run, failed in the other, with the same rows failing (a known gap applies only "
                     f"under the options it was measured with, e.g. the default SAEs): not a change: "
                     f"{_names(f'{claim} [{spec}]' for claim, spec, _ in same_rows_failing)}")
    return Comparison(pd.DataFrame(rows, columns=COMPARE_COLUMNS), notes)


def _outcome(status: str | None) -> str | None:
    return _OUTCOME.get(status, status)


def _pair(before: _Row | None, now: _Row | None, name: str) -> tuple:
    return (None if before is None else getattr(before, name)), (None if now is None else getattr(now, name))


def comparison_summary(comparison: Comparison) -> list[str]:
    """The notes, then one line per (claim, model, test): the role's feature index and outcome change, and
    how many rows flipped pass/fail and how many values moved."""
    changes = comparison.changes
    if changes.empty:
        return [*comparison.notes, "no claim changed outcome, row verdict or measured value"]
    lines = list(comparison.notes)
    tests_per_claim = changes.groupby("claim")["test"].nunique()
    for (claim, spec, test), rows in changes.groupby(["claim", "spec", "test"], sort=True):
        parts = []
        feature = rows[rows["quantity"] == "feature_index"]
        if len(feature):
            parts.append(f"feature {_index(feature['measured_baseline'].iloc[0])} -> {_index(feature['measured_current'].iloc[0])}")
        before, after = _first(rows["status_baseline"]), _first(rows["status_current"])
        if _outcome(before) != _outcome(after):
            parts.append(f"status {before} -> {after}")
        flipped = (rows["change"] == "verdict").sum()
        if flipped:
            parts.append(f"{flipped} row(s) flipped pass/fail")
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


def render_comparison(comparison: Comparison, baseline_label: str) -> str:
    """The regression section of index.html: what was compared, summary lines, then every changed row."""
    notes = "".join(f"<p class='note'>{html.escape(note)}</p>" for note in comparison.notes)
    items = "".join(f"<li>{html.escape(line)}</li>" for line in comparison_summary(Comparison(comparison.changes)))
    changes = comparison.changes
    table = changes.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4g}", border=0) if not changes.empty else ""
    return f"<h2>Changes since baseline</h2><p>Baseline: <code>{html.escape(baseline_label)}</code></p>{notes}<ul>{items}</ul>{table}"
