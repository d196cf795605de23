"""How a claims run uses the cores: pytest-xdist workers with one torch thread each, fed whole lanes.

`./run claims` starts two workers (CLAIMS_WORKERS). Torch's own threads do not pay here: on a
2-core machine with another job beside it, two threads per forward thrash (one TS-8M forward took
1.3 s with 2 threads under load, 0.1 s with 1), so every process gets one thread and the cores are
used by processes. A lane is what one worker runs without interruption: every test of one claims
file on one model, so that a model's memoized forward passes (mechinterp.memo) are shared by that
file's claims; E3's trained-SAE claims are lanes of their own, since one of them trains the SAEs
the others reuse from the cache. Lanes go out longest first (LANE_SECONDS, measured), so the two
workers end close together.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# Seconds of one lane alone on one core of the 2-core machine (a first run: E3's SAEs trained in it),
# measured with `./run claims` (results.json's per-claim seconds, mechinterp.timing). Unlisted lanes
# count DEFAULT_LANE_SECONDS; skipped tests (absent weights) cost nothing.
LANE_SECONDS: dict[tuple[str, str], float] = {}
DEFAULT_LANE_SECONDS = 5.0

_PARAM = re.compile(r"\[(?P<param>[^\]]*)\]$")


def is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config) -> bool:
    """The process that distributes tests to xdist workers (and writes the report)."""
    return not is_worker(config) and config.pluginmanager.has_plugin("dsession")


def worker_count(config) -> int:
    if is_worker(config):
        return int(config.workerinput.get("workercount", 1))
    numprocesses = getattr(config.option, "numprocesses", None)
    return int(numprocesses) if is_controller(config) and numprocesses else 1


def may_run_claims(config) -> bool:
    """Whether this run's paths reach claims/ (no path: the testpaths, which include it)."""
    claims_dir = Path(config.rootpath, "claims").resolve()
    paths = [Path(arg.split("::")[0]).resolve() for arg in config.args] or [claims_dir]
    return any(path == claims_dir or claims_dir in path.parents or path in claims_dir.parents for path in paths)


def torch_threads() -> int:
    """Threads per process: MECHINTERP_TORCH_THREADS, else OMP_NUM_THREADS, else 1 (see the module doc)."""
    for name in ("MECHINTERP_TORCH_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def lane_of(nodeid: str) -> str:
    """The lane of a claim test: its file and model, E3 trained-SAE claims each on their own.
    Tests of the toolkit (no model parameter) are lanes by file, as with --dist loadfile."""
    path, _, name = nodeid.partition("::")
    match = _PARAM.search(name)
    model = match.group("param") if match else ""
    if "test_e3" in path and "trained" in name:
        return f"{path}::{name}"
    return f"{path}[{model}]" if model else path


def lane_seconds(lane: str) -> float:
    path, _, rest = lane.partition("[")
    model = rest.rstrip("]")
    return LANE_SECONDS.get((path.rsplit("/", 1)[-1].partition("::")[0], model), DEFAULT_LANE_SECONDS)


def order_longest_first(items) -> list:
    """Items regrouped by lane, lanes longest first (ties: collection order), tests in collection order."""
    lanes: dict[str, list] = {}
    for item in items:
        lanes.setdefault(lane_of(item.nodeid), []).append(item)
    ranked = sorted(lanes.items(), key=lambda pair: -lane_seconds(pair[0]))
    return [item for _, lane in ranked for item in lane]


def make_lane_scheduler(config, log):
    """xdist's LoadScopeScheduling with lanes as its scopes, taken in the order the items come (see
    order_longest_first), never reordered by test count."""
    from xdist.scheduler import LoadScopeScheduling

    class LaneScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return lane_of(nodeid)

    config.option.loadscopereorder = False
    return LaneScheduling(config, log)
