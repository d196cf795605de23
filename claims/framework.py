"""The claims framework behind conftest.py: subjects, measurements, checks and the run's record.

A claim is declared once (claims.claim.Claim); its test (claims.claim.claim_tests) is marked
`@pytest.mark.claim("E2.logit-diff")`, takes the `subject` fixture (a model under test plus the threshold
rows that apply to it) and runs `check(run_claim(claim, subject, ...))`. `check` evaluates every row, records values, thresholds and the figure for the report, then
asserts. The Recorder also collects each claim test's pytest outcome (passed / failed / skipped with
its reason / error with its message) and writes the report at session end.
"""

from __future__ import annotations

import base64
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from claims import claim as registry
from claims.options import RunOptions
from claims.thresholds import Threshold, known_gap, lookup_all
from mechinterp import report
from mechinterp.model_specs import ModelSpec, UnknownModel, parse_spec
from mechinterp.models import WeightsUnavailable
from mechinterp.models import load as load_model


@dataclass
class Measured:
    """What a `measure_<name>(model)` returns: one float per quantity, an optional figure, extras."""

    values: dict[str, float]
    figure: Any = None  # a matplotlib Figure, embedded in the report
    details: dict = field(default_factory=dict)  # JSON-able extras shown in the report (per-prompt values, ...)
    # E3 over several SAE seeds (claims.sae_sources.over_seeds): seed -> values; every row is checked on each
    # seed (thresholds.SAE_SEED_RULE) and `values` are the first seed's
    per_seed: dict[int, dict[str, float]] | None = None

    def __post_init__(self):
        if not isinstance(self.values, dict) or not self.values:
            raise ValueError(f"Measured.values must be a non-empty dict of quantity -> float, got {self.values!r}")
        self.values = {str(k): float(v) for k, v in self.values.items()}
        if self.per_seed is not None:
            self.per_seed = {int(seed): {str(k): float(v) for k, v in values.items()} for seed, values in self.per_seed.items()}


@dataclass
class Subject:
    """One model under test, as a claim test sees it."""

    spec: ModelSpec  # the parsed --model value: .raw (as given), .row_key (whose rows apply), .planted, .kind
    model: Any  # HookedTransformer, loaded once per session
    tokenizer: Any
    thresholds: list[Threshold]  # the claim's rows on this model (SubjectRows)
    options: RunOptions | None = None  # the run's options (None outside a claims run)


def tokenizer_for(model):
    """The model's tokenizer, or GPT-2's (shared by every model here) when it carries none."""
    if getattr(model, "tokenizer", None) is not None:
        return model.tokenizer
    from fixtures.tokenizer import gpt2_tokenizer

    return gpt2_tokenizer()


# --- collection: which models each claim test runs on ---


def claim_of(node) -> str:
    marker = node.get_closest_marker("claim")
    if marker is None or len(marker.args) != 1 or not isinstance(marker.args[0], str):
        raise ValueError(f"{node.nodeid}: a test using `subject` needs @pytest.mark.claim(\"<claim id>\"), e.g. claim(\"E2.logit-diff\")")
    return marker.args[0]


def measured_only(claim: str) -> bool:
    """Whether `claim` has no threshold rows: measured and shown on every model (the circuit card)."""
    return registry.claim(claim).measured_only


def applies(claim: str, spec: ModelSpec) -> bool:
    """Whether `claim` runs on `spec`: it has a threshold row there, or is measured everywhere."""
    return measured_only(claim) or bool(lookup_all(claim, spec))


def subject_params(claim: str, options: RunOptions) -> list:
    """One pytest.param per selected model (its ModelSpec, id the --model text); a model with no threshold
    row is an explicit skip, not an omission."""
    params = []
    for spec in options.models:
        marks = []
        if not applies(claim, spec):
            marks = [pytest.mark.skip(reason=f"no threshold row for {claim} on {spec.row_key}: the thesis makes no such claim for it")]
        elif (gap := active_known_gap(options, claim, spec.raw)) is not None:
            marks = [known_gap_mark(gap)]
        params.append(pytest.param(spec, id=spec.raw, marks=marks))
    return params


def subject_spec(item) -> ModelSpec | None:
    """The ModelSpec a claim test runs on (its `subject` parameter), or None."""
    return item.callspec.params.get("subject") if hasattr(item, "callspec") else None


def known_gap_mark(gap) -> pytest.MarkDecorator:
    """A strict xfail: the claim runs and its failure is reported as "known gap" with the measured cause;
    once it passes, the test fails until the KNOWN_GAPS entry is removed (a seed-dependent gap, which passes
    on some SAE seeds, is not strict: its pass is reported as a pass)."""
    return pytest.mark.xfail(reason=f"known gap of {gap.model}: {gap.why}", strict=not gap.seed_dependent,
                             run=True, raises=KnownGapFailure)


class KnownGapFailure(AssertionError):
    """A check whose failing rows are all listed by the claim's known gap: the only failure its xfail expects.
    A row failing beyond the gap is a plain AssertionError, so it fails the test (the gap hides nothing else)."""


def active_known_gap(options: RunOptions, claim: str, spec: str):
    """The known gap that applies to `claim` on `spec` in this run: none when the run sets an option it was
    not measured under (`gap.unless_options`, e.g. E3's SAE source)."""
    gap = known_gap(claim, spec)
    if gap is None or any(options.is_set(option) for option in gap.unless_options):
        return None
    return gap


def check_failure(claim: str, spec: str, results: list[report.QuantityResult], gap=None) -> AssertionError:
    """The exception a failing check raises: KnownGapFailure when `gap` lists every failing row, else an
    AssertionError (naming the rows beyond the gap, if there is one)."""
    message = failure_message(claim, spec, results)
    if gap is None:
        return AssertionError(message)
    beyond = sorted({q.quantity for q in results if q.passed is False} - set(gap.quantities))
    if not beyond:
        return KnownGapFailure(message)
    return AssertionError(f"{message}\n  beyond its known gap: {', '.join(beyond)} fail(s) but its paper's KNOWN_GAPS "
                          f"lists only {', '.join(gap.quantities)} for {claim} on {gap.model}")


# --- fixtures' logic ---


def runnable_claims(items) -> dict[str, int]:
    """--model text -> how many collected (not deselected) claim tests will run a claim on it."""
    counts: dict[str, int] = {}
    for item in items:
        if item.get_closest_marker("claim") is None or not hasattr(item, "callspec"):
            continue
        spec = item.callspec.params.get("subject")
        if spec is None or any(mark.name == "skip" for mark in item.iter_markers()):
            continue
        counts[spec.raw] = counts.get(spec.raw, 0) + 1
    return counts


def unchecked_models(items, specs: list[ModelSpec]) -> list[ModelSpec]:
    counts = runnable_claims(items)
    return [spec for spec in specs if not counts.get(spec.raw)]


def unchecked_models_message(items, specs: list[ModelSpec]) -> str | None:
    """One line naming the selected models no collected claim test will check, or None. A run that
    checks nothing on a model the user named must not end green (see --allow-unchecked-models)."""
    unchecked = unchecked_models(items, specs)
    if not unchecked:
        return None
    names = ", ".join(spec.raw if spec.raw == spec.row_key else f"{spec.raw} (rows of {spec.row_key})" for spec in unchecked)
    return (f"no selected claim checks {names}: the thesis has no threshold row for it among the selected tests "
            f"(a -k/-m/path selection, or a model without rows); select other tests or models, or pass "
            f"--allow-unchecked-models to run anyway")


class ModelLoadFailed(RuntimeError):
    """A selected model that is there but cannot be loaded: one line, stops the run at its start."""


class ModelSource:
    """Loads each model once per session (on `device`), remembering absent weights too so the hub is
    probed once. Defaults to mechinterp.models.load; framework tests pass a fake `load`."""

    def __init__(self, load: Callable | None = None, device: str | None = None):
        self.load = load
        self.device = device
        self._cache: dict[str, Any] = {}  # spec -> model or WeightsUnavailable

    def _load(self, spec: str):
        if self.load is not None:
            return self.load(spec)
        return load_model(spec, device=self.device or "cpu")

    def get(self, spec: str):
        if spec not in self._cache:
            try:
                self._cache[spec] = self._load(spec)
            except WeightsUnavailable as absent:
                self._cache[spec] = absent
        if isinstance(self._cache[spec], WeightsUnavailable):
            raise self._cache[spec]
        return self._cache[spec]

    def preload(self, specs: list[str]) -> None:
        """Load every model up front, so a broken checkpoint stops the run before any claim runs
        (absent weights are remembered and become skips). Raises ModelLoadFailed with one line."""
        for spec in specs:
            try:
                self.get(spec)
            except WeightsUnavailable:
                continue
            except UnknownModel as err:  # CheckpointError included: already one line naming the file
                raise ModelLoadFailed(f"--model {spec}: {err}") from None
            except Exception as err:  # noqa: BLE001 - any other load failure is still one line, at the start
                first = (str(err).strip().splitlines() or [""])[0][:300]
                raise ModelLoadFailed(f"--model {spec}: cannot be loaded ({type(err).__name__}: {first})") from None


MODEL_SOURCE = pytest.StashKey[ModelSource]()


def session_model_source(config) -> ModelSource:
    """The run's ModelSource (config.stash[MODEL_SOURCE]); a test of the framework puts a fake there
    in its pytest_configure, before the models are loaded at the end of collection."""
    if MODEL_SOURCE not in config.stash:
        from claims.options import run_options

        config.stash[MODEL_SOURCE] = ModelSource(device=run_options(config).device)
    return config.stash[MODEL_SOURCE]


class DeviceError(ValueError):
    """A --device value that names no usable device (one line, before any model loads)."""


def resolve_device(option: str) -> str:
    """--device auto|cpu|cuda|cuda:N -> the torch device the whole run uses: models, patching, SAE
    training. auto is cuda when one is visible, else cpu; a cuda that is not there is an error, not a
    silent fall back to the CPU."""
    import torch

    text = option.strip().lower()
    if text == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if text == "cpu":
        return "cpu"
    if text == "cuda" or text.startswith("cuda:"):
        index = text.partition(":")[2]
        if index and not index.isdigit():
            raise DeviceError(f"--device {option}: expected cuda or cuda:N with N a GPU index")
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {option}: no CUDA device is visible to torch "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}); use --device cpu")
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(f"--device {option}: only {torch.cuda.device_count()} CUDA device(s) visible")
        return text
    raise DeviceError(f"--device {option}: expected auto, cpu, cuda or cuda:N")


def make_subject(claim: str, spec: ModelSpec, source: ModelSource, options: RunOptions | None = None) -> Subject:
    """The Subject for `spec`; skips the test (one line saying how to provide them) when weights are absent."""
    try:
        model = source.get(spec.raw)
    except WeightsUnavailable as absent:
        pytest.skip(str(absent))
    rows = SubjectRows(lookup_all(claim, spec), calibrated=getattr(getattr(model, "planted", None), "calibrated", ()))
    return Subject(spec, model, tokenizer_for(model), rows, options)


def run_claim(claim: registry.Claim, subject: Subject, sae_sets: Callable | None = None) -> Measured:
    """A claim's measurement on its subject: the protocol (over each --sae-seeds SAE set for an E3 claim,
    `sae_sets(subject) -> [SAESet]`), then its distribution pass when the run has one."""
    if claim.over_sae_seeds:
        from claims.sae_sources import over_seeds

        measured = over_seeds(sae_sets(subject), lambda saes: protocol(claim, subject, saes))
    else:
        measured = protocol(claim, subject)
    n_prompts = subject.options.distribution_prompt_count(subject.model) if subject.options else 0
    if n_prompts and (claim.distribution is not None or claim.robustness is not None):
        from mechinterp.robustness import RobustnessConfig, with_robustness

        cfg = RobustnessConfig(n_prompts=n_prompts)
        if claim.robustness is not None:
            return claim.robustness(measured, subject, cfg)
        return with_robustness(measured, subject.model, subject.tokenizer, claim.distribution(subject.model), subject.thresholds, cfg)
    return measured


def protocol(claim: registry.Claim, subject: Subject, saes=None) -> Measured:
    """The claim's protocol on the subject's model: measure(model, [saes,] *inputs)."""
    inputs = [read(subject) for read in claim.inputs]
    return claim.measure(subject.model, *([saes] if claim.over_sae_seeds else []), *inputs)


def measure_claim(claim: str | registry.Claim, model, spec: str | ModelSpec, saes=None) -> Measured:
    """A declared claim's protocol on `model` outside a claims run (no distribution pass), its rows those of
    `spec`: what the claim-pair tests and the benchmarks call. E3 claims take one SAESet as `saes`."""
    declared = registry.claim(claim) if isinstance(claim, str) else claim
    spec = parse_spec(spec)
    subject = Subject(spec, model, tokenizer_for(model), SubjectRows(lookup_all(declared.id, spec)))
    return protocol(declared, subject, saes)


class SubjectRows(list):
    """A subject's threshold rows, carrying the (claim, quantity) pairs its planted model was built to
    (PlantedInfo.calibrated; empty for a real model), so `evaluate(measured, subject.thresholds)` can
    mark those rows "calibrated by construction"."""

    def __init__(self, rows, calibrated=()):
        super().__init__(rows)
        self.calibrated = frozenset(calibrated)


def _row_result(row: Threshold, value: float | None = None, passed: bool | None = None,
                calibrated: bool = False) -> report.QuantityResult:
    return report.QuantityResult(row.quantity, value, row.thesis_value, row.op, row.threshold, row.tolerance,
                                 row.describe(), row.why, passed, calibrated)


def evaluate(measured: Measured, rows: list[Threshold]) -> list[report.QuantityResult]:
    """Every row against its measured value (a missing quantity fails), then values with no row (info).
    A row its planted model was built to (`rows.calibrated`, see SubjectRows) is marked calibrated.
    Measured over several SAE seeds, a row passes when it holds on every seed (SAE_SEED_RULE) and shows
    its worst seed's value; each seed's values and pass counts go to details['sae_seeds']."""
    calibrated = getattr(rows, "calibrated", frozenset())
    per_seed = measured.per_seed
    results = []
    for row in rows:
        if per_seed:
            value, passed = _worst_seed(row, [values.get(row.quantity) for values in per_seed.values()])
        else:
            value = measured.values.get(row.quantity)
            passed = value is not None and row.passes(value)
        results.append(_row_result(row, value, passed=passed, calibrated=(row.claim, row.quantity) in calibrated))
    with_rows = {row.quantity for row in rows}
    results += [report.QuantityResult(q, v) for q, v in measured.values.items() if q not in with_rows]
    if per_seed:
        measured.details["sae_seeds"] = seed_table(per_seed, rows)
    return results


def _worst_seed(row: Threshold, values: list[float | None]) -> tuple[float | None, bool]:
    """(shown value, passed) of a row over seeds: its worst seed's value (None if a seed did not measure
    it, NaN if one measured NaN), i.e. the farthest on the failing side of the bound; passed = every seed passes."""
    if any(value is None for value in values):
        return None, False
    if any(math.isnan(value) for value in values):
        return math.nan, False
    if row.op == "within":
        worst = max(values, key=lambda v: abs(v - row.threshold))
    else:
        worst = (min if row.op in (">", ">=") else max)(values)
    return worst, all(row.passes(value) for value in values)


def seed_table(per_seed: dict[int, dict[str, float]], rows: list[Threshold]) -> dict:
    """What the report shows of a multi-seed measurement: seeds, the rule, each quantity's value per seed
    (in seed order) and, for quantities with rows, how many seeds pass all of them."""
    from claims.thresholds import SAE_SEED_RULE

    seeds = list(per_seed)
    quantities = list(dict.fromkeys(q for values in per_seed.values() for q in values))
    passing = {}
    for quantity in dict.fromkeys(row.quantity for row in rows):
        quantity_rows = [row for row in rows if row.quantity == quantity]
        passing[quantity] = sum(per_seed[seed].get(quantity) is not None
                                and all(row.passes(per_seed[seed][quantity]) for row in quantity_rows) for seed in seeds)
    return {"seeds": seeds, "rule": SAE_SEED_RULE, "values": {q: [per_seed[s].get(q) for s in seeds] for q in quantities},
            "seeds_passing": passing}


def unevaluated(rows: list[Threshold]) -> list[report.QuantityResult]:
    """The rows with no measurement, so a skipped or errored claim still shows what it would check."""
    return [_row_result(row) for row in rows]


def failure_message(claim: str, spec: str, results: list[report.QuantityResult]) -> str:
    lines = [f"{claim} on {spec}:"]
    for q in results:
        if q.passed is False:
            got = "not measured (missing from Measured.values)" if q.measured is None else f"{q.measured:.6g}"
            thesis = "" if q.thesis_value is None else f" (thesis {q.thesis_value:g})"
            lines.append(f"  {q.quantity} = {got} fails '{q.rule}'{thesis}: {q.why}")
    return "\n".join(lines)


# --- the run's record ---


class Recorder:
    """Every claim test of the session: created at collection, filled by check() and by pytest's reports."""

    def __init__(self, specs: list[ModelSpec]):
        self.specs = specs
        self.models = [spec.raw for spec in specs]
        self.started = report.utc_now()
        self.results: dict[str, report.ClaimResult] = {}  # nodeid -> result
        self.notes: list[str] = []  # what the run left out, said once on the page and the terminal

    def leave_out(self, unchecked: list[ModelSpec]) -> None:
        """Drop default models no selected claim runs on (`-k e3` runs on TinyStories-8M only): the
        user did not name them, so the run goes on without them and says so once."""
        if not unchecked:
            return
        left = {spec.raw for spec in unchecked}
        self.specs = [spec for spec in self.specs if spec.raw not in left]
        self.models = [spec.raw for spec in self.specs]
        self.results = {nodeid: r for nodeid, r in self.results.items() if r.spec not in left}
        self.notes.append(f"left out {', '.join(sorted(left))}: default model(s) no selected claim runs on")

    def expect(self, items) -> None:
        """Register the collected claim tests, so one that never runs still shows as 'not run'."""
        for item in items:
            if item.get_closest_marker("claim") is None:
                continue
            spec = subject_spec(item)
            claim = claim_of(item)
            declared = registry.claim(claim)
            self.results[item.nodeid] = report.ClaimResult(
                claim, spec.raw if spec else "", spec.row_key if spec else "", bool(spec and spec.planted), "not run",
                nodeid=item.nodeid, quantities=unevaluated(lookup_all(claim, spec)) if spec else [],
                identity=spec.identity() if spec else "", statement=declared.statement, where=declared.where,
            )

    def record_collect_error(self, collect_report) -> None:
        """A claims file that fails to import is an errored claim, not a silent gap."""
        if collect_report.failed and "claims" in Path(str(collect_report.fspath)).parts:
            nodeid = collect_report.nodeid
            self.results[nodeid] = report.ClaimResult(f"(collection) {nodeid}", "", "", False, "error",
                                                      message=str(collect_report.longrepr)[-2000:], nodeid=nodeid)

    def record_measurement(self, nodeid: str, measured: Measured, quantities: list[report.QuantityResult]) -> None:
        result = self.results[nodeid]
        result.quantities = quantities
        result.details = measured.details
        if measured.figure is not None:
            result.figure_png = report.figure_to_png(measured.figure)

    def record_phase(self, item, call, test_report) -> None:
        """Fold one setup/call/teardown report into the claim's status (the worst outcome wins) and add
        its duration to the claim's wall time. Under pytest-xdist this runs on the worker, and the
        claim's whole record travels to the controller in the report (see `payload` / `apply`)."""
        result = self.results.get(item.nodeid)
        if result is None:
            return
        result.seconds = (result.seconds or 0.0) + test_report.duration
        if test_report.skipped and hasattr(test_report, "wasxfail"):
            # an expected failure: measured, failing, and documented as a gap of this (planted) model
            result.status, result.message = "known gap", test_report.wasxfail
        elif test_report.skipped:
            result.status, result.message = "skipped", _skip_reason(test_report)
        elif test_report.failed and call.excinfo is None:  # a strict known gap that passed (XPASS(strict))
            result.status = "failed"
            result.message = f"{test_report.longrepr}. It now passes: remove its entry from its paper's KNOWN_GAPS"
        elif test_report.failed:
            is_failed_check = test_report.when == "call" and call.excinfo.errisinstance((AssertionError, pytest.fail.Exception))
            if result.status != "failed":  # a teardown error after a failed check stays 'failed'
                result.status = "failed" if is_failed_check else "error"
                result.message = _exception_message(call.excinfo)
        elif test_report.when == "call" and hasattr(test_report, "wasxfail"):  # a seed-dependent known gap that passed
            result.status = "passed"
            result.message = f"every row holds on these SAEs; its paper's KNOWN_GAPS lists it as seed-dependent ({test_report.wasxfail})"
        elif test_report.when == "call":
            result.status, result.message = ("measured" if measured_only(result.claim) else "passed"), ""

    def payload(self, nodeid: str) -> dict | None:
        """The claim's record as plain JSON values (figure as base64), to ride in a test report's
        user_properties from an xdist worker to the controller, which writes the report."""
        result = self.results.get(nodeid)
        if result is None:
            return None
        record = asdict(result)
        if result.figure_png is not None:
            record["figure_png"] = base64.b64encode(result.figure_png).decode("ascii")
        import json

        from mechinterp.results import to_jsonable

        return json.loads(json.dumps(record, default=to_jsonable))

    def apply(self, payload: dict) -> None:
        """The controller's side of `payload`: the worker's record replaces the expected one (a model the
        run left out stays out: its tests still run on the workers, as skips)."""
        record = dict(payload)
        if record.get("spec") and record["spec"] not in self.models:
            return
        if record.get("figure_png") is not None:
            record["figure_png"] = base64.b64decode(record["figure_png"])
        record["quantities"] = [report.QuantityResult(**q) for q in record.get("quantities", [])]
        self.results[record["nodeid"]] = report.ClaimResult(**record)

    def measured_anything(self) -> bool:
        """Whether any claim test got an outcome (ran, skipped, or failed to collect)."""
        return any(result.status != "not run" for result in self.results.values())

    @property
    def has_claims(self) -> bool:
        return bool(self.results)

    def write(self, directory: Path, command: str, baseline: dict | None = None, baseline_label: str = "",
              interrupted: bool = False, compare_all: bool = False):
        """Write the report (atomically) -> (index.html path, the comparison with `baseline` or None).
        When it cannot be written, results.json is saved under the temp dir and the ReportWriteError says where."""
        from mechinterp import compare, results

        claim_results = list(self.results.values())
        not_run = sum(r.status == "not run" for r in claim_results)
        run = results.RunInfo(self.started, results.utc_now(), self.models, command, results.package_versions(),
                              interrupted=interrupted or not_run > 0, not_run=not_run)
        document = results.results_to_dict(run, claim_results)
        changes = None if baseline is None else compare.compare_results(document, baseline, compare_all=compare_all)
        try:
            return report.write_report(run, claim_results, directory, changes, baseline_label, run_notes=self.notes), changes
        except report.PageRenderError:
            raise  # results.json is already in the report directory: no second copy
        except report.ReportWriteError as failure:
            try:
                saved = f"the results are saved in {results.save_results_fallback(document)}"
            except OSError as err:
                saved = f"the results could not be saved either ({err})"
            raise report.ReportWriteError(f"{failure}; {saved}") from failure


def unapplied_known_gaps_note(options: RunOptions, recorder: Recorder) -> str:
    """One line naming the known gaps this run does not apply (it sets an option they were not measured
    under, e.g. --sae-config), or ''."""
    gaps = registry.all_known_gaps()
    values = {name: getattr(options, name) for gap in gaps for name in gap.unless_options}
    return report.unapplied_known_gaps_note(gaps, {(r.claim, r.spec) for r in recorder.results.values()}, values)


def one_line_errors() -> tuple[type, ...]:
    """Errors whose message is the whole story (what is wrong, what to do): shown without a traceback."""
    from mechinterp.sae_cache import SAECacheError
    from mechinterp.sae_options import SAEOptionError

    return (SAECacheError, SAEOptionError, UnknownModel)


def finished_line(result: report.ClaimResult) -> str:
    """The terminal's line for a claim test that ended: outcome, claim, model, wall time."""
    seconds = "" if result.seconds is None else f" ({result.seconds:.1f} s)"
    first = (result.message.strip().splitlines() or [""])[0] if result.status in ("failed", "error") else ""
    return f"  {result.status:<9} {result.claim} on {result.spec}{seconds}" + (f": {first[:160]}" if first else "")


def skipped_models_lines(claim_results) -> list[str]:
    """One line per model whose claims were skipped for one reason (absent weights: the how-to line),
    instead of a line per claim test."""
    by_reason: dict[tuple[str, str], int] = {}
    for result in claim_results:
        if result.status == "skipped" and not result.message.startswith("no threshold row"):
            key = (result.spec, result.message)
            by_reason[key] = by_reason.get(key, 0) + 1
    return [f"{spec}: {count} claim test(s) skipped: {reason}" for (spec, reason), count in by_reason.items()]


def _skip_reason(test_report) -> str:
    longrepr = test_report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return longrepr[2].removeprefix("Skipped: ")
    return str(longrepr)


def _exception_message(excinfo) -> str:
    if excinfo.errisinstance(AssertionError):
        return str(excinfo.value)
    return f"{excinfo.typename}: {excinfo.value}"


def run_stamp(now: datetime | None = None, pid: int | None = None) -> str:
    """A run's directory name: UTC time to the millisecond plus the process id, e.g.
    20261207T113512.123Z-4242, so runs started in the same second (or millisecond) get their own."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond // 1000:03d}Z-{os.getpid() if pid is None else pid}"


def default_report_dir(rootdir: Path, now: datetime | None = None, pid: int | None = None) -> Path:
    return Path(rootdir) / "reports" / run_stamp(now, pid)


def create_run_directory(directory: Path) -> Path:
    """Create a default report directory exclusively (mkdir fails when it exists), so two runs never
    share one: where the name is taken, -1, -2, ... is appended. Returns the directory created."""
    for attempt in range(1000):
        candidate = directory if attempt == 0 else directory.with_name(f"{directory.name}-{attempt}")
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            continue
    raise report.ReportDirError(f"{directory}: no free run directory name after 1000 tries")


def command_line(config) -> str:
    return " ".join(["pytest", *config.invocation_params.args])
