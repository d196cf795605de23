"""Regression mode: what changed between a baseline run and this one.

`compare_results(current, baseline)` takes results.json documents (dicts, as `results.load_results`
gives them; paths are loaded for convenience) and returns a Comparison: one line per claim test that
changed (`ClaimChange`: its outcome, its role's feature and recovery cosine, its key value, before -> after),
one row per threshold row (claim, model, test, quantity, operator, threshold) whose pass/fail or measured
value changed (with, for E3 over several SAE seeds, whether the change is beyond the seed-to-seed spread),
and notes saying once what was left out of the comparison. By default only what both runs measured is compared:
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


@dataclass(frozen=True)
class ClaimChange:
    """One claim test that changed, read at a glance: each pair is (baseline, current). `key` is its first
    threshold row's quantity (`key_quantity`); `feature` / `cosine` are an E3 role's feature_index and
    planted_direction_cosine (None where not measured); `key_seed_spread` is seed_spread_verdict's for it."""

    claim: str
    spec: str
    test: str
    role: str
    status: tuple[str | None, str | None]
    feature: tuple[float | None, float | None]
    cosine: tuple[float | None, float | None]
    key_quantity: str
    key: tuple[float | None, float | None]
    key_seed_spread: str
    rows_flipped: int  # threshold rows whose pass/fail changed
    values_changed: int  # rows whose measured value changed (or that are new / gone)
    values_beyond_spread: int | None  # of those, how many moved beyond the SAE seeds' spread; None: no seeds

    def line(self, with_test: bool = False) -> str:
        """E.g. 'E3.L5-to-feature [planted:tinystories-8m] role L5-to: feature 545 -> 976, recovery cosine
        0.942 -> 0.935; p_io_ablated 2.03e-05 -> 0.5; known gap -> failed; 1 row(s) flipped pass/fail, 20 value(s) changed'.
        A value or outcome that did not change is shown once."""
        head = f"{self.claim} [{self.spec}]{' ' + self.test if with_test else ''}{' role ' + self.role if self.role else ''}: "
        parts = []
        if self.feature != (None, None):
            role = f"feature {_moved(self.feature, _index)}"
            if self.cosine != (None, None):
                role += f", recovery cosine {_moved(self.cosine, _short)}"
            parts.append(role)
        if self.key_quantity:
            spread = f" ({self.key_seed_spread.split(' (')[0]})" if self.key_seed_spread else ""  # 'beyond seed spread'
            parts.append(f"{self.key_quantity} {_moved(self.key, _short)}{spread}")
        before, after = self.status
        parts.append(f"{before or 'absent'} -> {after or 'absent'}" if _outcome(before) != _outcome(after) else str(after))
        counts = f"{self.rows_flipped} row(s) flipped pass/fail, " if self.rows_flipped else ""
        counts += f"{self.values_changed} value(s) changed"
        if self.values_beyond_spread is not None:
            counts += f", {self.values_beyond_spread} beyond the SAE seeds' spread"
        return head + "; ".join([*parts, counts])


@dataclass
class Comparison:
    """The rows that changed (COMPARE_COLUMNS), one ClaimChange per claim test that changed, and notes on
    what was compared (each one line)."""

    changes: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    claims: list[ClaimChange] = field(default_factory=list)

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
    unless both runs have two or more seeds' values. With an unbounded value on either side (a lead whose runner-up
    is below the noise floor is inf) a range and a mean say nothing, so the seeds' ranges are compared instead: beyond
    when they do not overlap."""
    before = [v for v in before or [] if v is not None and not math.isnan(v)]
    now = [v for v in now or [] if v is not None and not math.isnan(v)]
    if len(before) < 2 or len(now) < 2:
        return ""
    if not all(math.isfinite(v) for v in before + now):
        apart = max(now) < min(before) or min(now) > max(before)
        return (f"{'beyond' if apart else 'within'} seed spread (seeds {min(before):.3g}..{max(before):.3g} -> "
                f"{min(now):.3g}..{max(now):.3g})")
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
    """What changed from `baseline` to `current`: the claim tests whose outcome (passed, failed, skipped, ...; a
    known gap is a failure), row pass/fail or measured values changed (`claims`), and their rows that changed.

    A row's `change` is one of 'verdict' (its pass/fail), 'value', 'new' (only in current), 'gone' (only in
    baseline); a row equal in both runs is not listed, even when its claim's outcome changed.
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
    rows, relabelled, flipped, changed = [], set(), set(), Counter()
    for key in sorted(now.keys() | before.keys(), key=lambda k: tuple("" if v is None else str(v) for v in k)):
        row_now, row_before = now.get(key), before.get(key)
        if row_now and row_before and row_now.status != row_before.status and _outcome(row_now.status) == _outcome(row_before.status):
            relabelled.add(key[:3])
        if row_before is None:
            change = "new"
        elif row_now is None:
            change = "gone"
        elif row_now.passed != row_before.passed:
            change = "verdict"
            flipped.add(key[:3])
        elif _values_differ(row_now.measured, row_before.measured, atol, rtol):
            change = "value"
        else:
            continue
        changed[key[:3]] += 1
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
    changes = pd.DataFrame(rows, columns=COMPARE_COLUMNS)
    tests = dict.fromkeys(k[:3] for k in [*now, *before])  # document order: the current run's, then the baseline's
    claims = [_claim_change(test, now, before, changes)
              for test in tests if changed[test] or _outcome(_status(now, test)) != _outcome(_status(before, test))]
    return Comparison(changes, notes, sorted(claims, key=lambda c: (c.claim, c.spec, c.test)))


def _status(flat: dict[tuple, _Row], test: tuple) -> str | None:
    return next((row.status for key, row in flat.items() if key[:3] == test), None)


def _claim_change(test: tuple, now: dict[tuple, _Row], before: dict[tuple, _Row], changes: pd.DataFrame) -> ClaimChange:
    """The at-a-glance line of one claim test: its rows in both runs, and its rows in `changes`."""
    mine_now = {k: r for k, r in now.items() if k[:3] == test}
    mine_before = {k: r for k, r in before.items() if k[:3] == test}
    keys = list(dict.fromkeys([*mine_now, *mine_before]))

    def pair(key: tuple | None) -> tuple:
        return _pair(mine_before.get(key), mine_now.get(key), "measured") if key else (None, None)

    def first(quantity: str) -> tuple | None:
        return next((k for k in keys if k[3] == quantity), None)

    key = next((k for k in keys if k[4] is not None), None)  # the first threshold row: the claim's key value
    either = next(iter(mine_now.values()), None) or next(iter(mine_before.values()))
    rows = changes[(changes["claim"] == test[0]) & (changes["spec"] == test[1]) & (changes["test"] == test[2])]
    seeded = any(rows["seed_spread"])
    # the changed rows whose value moved (new, gone, 'value'; a row that flipped pass/fail may have kept its value)
    moved = sum(change != "verdict" or _values_differ(_number(a), _number(b), 0.0, 0.0)
                for change, a, b in zip(rows["change"], rows["measured_current"], rows["measured_baseline"]))
    return ClaimChange(
        *test, either.role, (_status(before, test), _status(now, test)), pair(first("feature_index")),
        pair(first("planted_direction_cosine")), key[3] if key else "", pair(key),
        seed_spread_verdict(*(r.seeds if r else None for r in (mine_before.get(key), mine_now.get(key)))) if key else "",
        int((rows["change"] == "verdict").sum()), int(moved),
        int(rows["seed_spread"].str.startswith("beyond").sum()) if seeded else None)


def _moved(pair: tuple, fmt) -> str:
    before, after = pair
    if not _values_differ(_number(after), _number(before), 0.0, 0.0):
        return fmt(after)
    return f"{fmt(before)} -> {fmt(after)}"


def _short(value) -> str:
    number = _number(value)
    return "none" if number is None else f"{number:.3g}"


def _outcome(status: str | None) -> str | None:
    return _OUTCOME.get(status, status)


def _pair(before: _Row | None, now: _Row | None, name: str) -> tuple:
    return (None if before is None else getattr(before, name)), (None if now is None else getattr(now, name))


def comparison_summary(comparison: Comparison) -> list[str]:
    """The notes, then one line per claim test that changed (`ClaimChange.line`; the test's name where its
    claim has several tests)."""
    if not comparison.claims:
        return [*comparison.notes, "no claim changed outcome, row verdict or measured value"]
    tests_per_claim = Counter(change.claim for change in comparison.claims)
    return [*comparison.notes, *(change.line(with_test=tests_per_claim[change.claim] > 1) for change in comparison.claims)]


def _number(value) -> float | None:
    return None if value is None or pd.isna(value) else float(value)


def _index(value) -> str:
    return "none" if value is None or pd.isna(value) else str(int(value))


def render_comparison(comparison: Comparison, baseline_label: str) -> str:
    """The regression section of index.html: what was compared, one line per claim test that changed, then every
    changed row in a table collapsed under them."""
    notes = "".join(f"<p class='note'>{html.escape(note)}</p>" for note in comparison.notes)
    lines = comparison_summary(Comparison(comparison.changes, claims=comparison.claims))
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    changes = comparison.changes
    table = "" if changes.empty else (
        f"<details class='changed-rows'><summary>All {len(changes)} changed row(s)</summary>"
        + changes.to_html(index=False, na_rep="—", float_format=lambda v: f"{v:.4g}", border=0) + "</details>")
    return f"<h2>Changes since baseline</h2><p>Baseline: <code>{html.escape(baseline_label)}</code></p>{notes}<ul>{items}</ul>{table}"
