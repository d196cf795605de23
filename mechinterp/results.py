"""The results model of a claims run and its JSON form (results.json).

One ClaimResult per claim test (claim x model): its status and, per quantity, the measured value
beside the thesis value and the threshold row. `load_results` reads a results.json back and checks
its shape, so a wrong file is one line naming it, not a KeyError deep in a comparison.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# "measured": a claim with no threshold row that ran (the circuit card): a value shown, nothing asserted.
STATUSES = ("passed", "measured", "failed", "known gap", "skipped", "error", "not run")
VERSIONED_PACKAGES = ("torch", "transformer_lens", "sae_lens", "transformers")
RESULTS_FILE = "results.json"


class ResultsFileError(ValueError):
    """A results.json that is missing, unreadable or not of the shape a claims run writes (one line)."""


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
    # The planted model was built to this quantity (PlantedInfo.calibrated): passing shows only that the
    # suite measures what the builder set, not the thesis's finding.
    calibrated: bool = False


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
    identity: str = ""  # how the model was identified, e.g. "local directory, identified as tiny-stories-8M by its config"
    seconds: float | None = None  # the claim test's wall time (setup + call + teardown); None: not run
    stage_seconds: dict = field(default_factory=dict)  # seconds per top-level progress stage (mechinterp.timing)
    statement: str = ""  # the paper's finding in one sentence (the claim's declaration, claims.claim.Claim)
    where: str = ""  # where the paper shows it


@dataclass
class RunInfo:
    started_utc: str
    finished_utc: str
    models: list[str]
    command: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    interrupted: bool = False  # stopped early (Ctrl-C, -x, maxfail): `not_run` claim tests never ran
    not_run: int = 0


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


def to_jsonable(value):
    """json.dumps fallback for tensors, numpy scalars/arrays and paths in `details`."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)


def results_to_dict(run: RunInfo, results: list[ClaimResult]) -> dict:
    """results.json's content, as plain JSON values (what `load_results` gives back)."""
    rows = []
    for result in results:
        row = asdict(result)
        row["has_figure"] = row.pop("figure_png") is not None
        rows.append(row)
    document = {
        "run": asdict(run),
        "planted_in_run": any(r.planted for r in results),
        "counts": {s: sum(r.status == s for r in results) for s in STATUSES},
        "results": rows,
    }
    return json.loads(json.dumps(document, default=to_jsonable))


def results_json(document: dict) -> str:
    return json.dumps(document, indent=1)


def results_file(path) -> Path:
    """The results.json meant by a path: the file itself, or the one inside a run directory."""
    path = Path(path)
    return path / RESULTS_FILE if path.is_dir() else path


def load_results(path_or_dict) -> dict:
    """A results.json (or its run directory, or an already loaded dict), checked for shape."""
    if isinstance(path_or_dict, dict):
        return check_results_shape(path_or_dict, "results")
    path = results_file(path_or_dict)
    if not path.exists():
        raise ResultsFileError(f"{path}: no such file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ResultsFileError(f"{path}: cannot read it ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise ResultsFileError(f"{path}: not a results.json (not UTF-8 text)") from None
    except json.JSONDecodeError as err:
        raise ResultsFileError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    return check_results_shape(document, str(path))


_ROW_KEYS = ("claim", "spec", "status", "quantities")


def check_results_shape(document, source: str) -> dict:
    """`document` if it has the shape a claims run writes; else ResultsFileError naming `source` and the fault."""
    if not isinstance(document, dict):
        raise ResultsFileError(f"{source}: expected a JSON object with 'run' and 'results', got a {type(document).__name__}")
    missing = [key for key in ("run", "results") if key not in document]
    if missing:
        raise ResultsFileError(f"{source}: not a claims results.json (no {' or '.join(repr(k) for k in missing)} entry)")
    if not isinstance(document["run"], dict):
        raise ResultsFileError(f"{source}: 'run' is not an object")
    if not isinstance(document["results"], list):
        raise ResultsFileError(f"{source}: 'results' is not a list")
    for i, row in enumerate(document["results"]):
        if not isinstance(row, dict):
            raise ResultsFileError(f"{source}: results[{i}] is not an object")
        lacking = [key for key in _ROW_KEYS if key not in row]
        if lacking:
            raise ResultsFileError(f"{source}: results[{i}] has no {', '.join(repr(k) for k in lacking)}")
        if not isinstance(row["quantities"], list):
            raise ResultsFileError(f"{source}: results[{i}].quantities is not a list")
        for j, q in enumerate(row["quantities"]):
            if not isinstance(q, dict) or "quantity" not in q:
                raise ResultsFileError(f"{source}: results[{i}].quantities[{j}] is not an object with a 'quantity'")
    return document


def check_baseline(baseline, report_dir) -> dict:
    """The loaded --baseline, checked at the start of a run: readable, of the right shape, and not the
    results.json this run writes into `report_dir` (which would be replaced before the comparison)."""
    path = results_file(baseline).resolve()
    target = Path(report_dir).resolve()
    if path == target or target in path.parents:
        raise ResultsFileError(f"{path} is inside the report directory this run writes ({target}): it would be "
                               "replaced before the comparison; copy it elsewhere or choose another --report-dir")
    return load_results(path)


def save_results_fallback(document: dict) -> Path:
    """Write results.json where it can always go (a fresh directory under the system temp dir), for a
    run whose report directory could not be written; returns its path so the caller can say where."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = Path(tempfile.mkdtemp(prefix=f"mechinterp-results-{stamp}-{os.getpid()}-"))
    path = directory / RESULTS_FILE
    path.write_text(results_json(document), encoding="utf-8")
    return path
