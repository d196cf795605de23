"""How a claims run uses the cores: pytest-xdist workers with one torch thread each, fed whole lanes.

`./run claims` starts two workers (CLAIMS_WORKERS). Torch's own threads do not pay here: on a
2-core machine with another job beside it, two threads per forward thrash (one TS-8M forward took
1.3 s with 2 threads under load, 0.1 s with 1), so every process gets one thread and the cores are
used by processes. A lane is what one worker runs without interruption: every test of one claims
file on one model, so that a model's memoized forward passes (mechinterp.memo) are shared by that
file's claims; E3 is split in two lanes by the SAE blocks it trains (SPLIT_LANES). Lanes go out
longest first (LANE_SECONDS, measured), so the two workers end close together.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

# E3 on one model is two lanes, by the SAE blocks their claims train first (5; 6 and 7), so that the two
# workers train different SAEs at once; the random control also reads block 6, from the cache (a worker
# that gets there first waits on the cache entry's lock instead of training it twice).
SPLIT_LANES: dict[str, dict[str, str]] = {
    "test_e3_features.py": {"test_l5_to_feature": "L5", "test_l5_gave_feature": "L5", "test_l5_infinitive_to": "L5",
                            "test_random_control": "L5"},
}
SPLIT_DEFAULT = "L6-7"

# Seconds of each lane (file, model, part) in a first `./run claims` (E3's SAEs trained in it) on the
# 2-core machine, from results.json's per-claim seconds (mechinterp.timing), measured 2026-12-07 beside
# other jobs: only their order matters. Unlisted lanes count DEFAULT_LANE_SECONDS.
LANE_SECONDS: dict[tuple[str, str, str], float] = {
    ("test_e3_features.py", "planted:tinystories-8m", "L6-7"): 206,
    ("test_e2_patching.py", "planted:gpt2-small", ""): 157,
    ("test_e2_eap.py", "planted:tinystories-8m", ""): 112,
    ("test_e3_features.py", "planted:tinystories-8m", "L5"): 106,
    ("test_e1_head_scores.py", "planted:gpt2-small", ""): 62,
    ("test_e2_logit_lens.py", "planted:tinystories-8m", ""): 47,
    ("test_e2_patching.py", "planted:tinystories-8m", ""): 44,
    ("test_e2_logit_lens.py", "planted:gpt2-small", ""): 40,
    ("test_e1_head_scores.py", "planted:tinystories-8m", ""): 35,
    ("test_circuit_card.py", "planted:gpt2-small", ""): 32,
    ("test_e2_logit_diff.py", "planted:gpt2-small", ""): 30,
    ("test_e2_attention.py", "planted:gpt2-small", ""): 24,
    ("test_e2_dla.py", "planted:gpt2-small", ""): 22,
    ("test_e2_attention.py", "planted:tinystories-8m", ""): 20,
}
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
    if not is_controller(config) or not numprocesses:
        return 1
    return int(numprocesses) if str(numprocesses).isdigit() else 2  # "auto" before xdist resolves it: several


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


def lane_key(nodeid: str) -> tuple[str, str, str]:
    """(file name, model, part) of a test: its claims file, its --model value ('' for a toolkit test)
    and, for a file split in lanes (SPLIT_LANES), the part its test function belongs to."""
    path, _, name = nodeid.partition("::")
    match = _PARAM.search(name)
    model = match.group("param") if match else ""
    filename = path.rsplit("/", 1)[-1]
    split = SPLIT_LANES.get(filename)
    part = "" if split is None else split.get(name.partition("[")[0], SPLIT_DEFAULT)
    return filename, model, part


def lane_of(nodeid: str) -> str:
    """The lane of a test, as xdist's scope: its file and model (and part, for a split file)."""
    path = nodeid.partition("::")[0]
    _, model, part = lane_key(nodeid)
    return f"{path}[{model}]{'/' + part if part else ''}"


def lane_seconds(nodeid: str) -> float:
    return LANE_SECONDS.get(lane_key(nodeid), DEFAULT_LANE_SECONDS)


def order_longest_first(items) -> list:
    """Items regrouped by lane, lanes longest first (ties: collection order), tests in collection order."""
    lanes: dict[str, list] = {}
    for item in items:
        lanes.setdefault(lane_of(item.nodeid), []).append(item)
    ranked = sorted(lanes.items(), key=lambda pair: -lane_seconds(pair[1][0].nodeid))
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
