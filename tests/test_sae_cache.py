"""mechinterp/sae_cache.py's cache (as mechinterp/sae_training.py uses it) under concurrent runs and interruptions: two processes training
the same SAE on an empty cache (one trains, the other waits and loads), a rename lost to another
writer, Ctrl-C while saving, and a process SIGKILLed while saving (no corrupt entry; the next run
sweeps its staging and trains cleanly).

Child processes run this file as a script (`_child`), so it imports only what they need: its tiny
model and config are its own, not test_sae_training's (which imports the E3 claims module).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CHILD_TIMEOUT_S = 240  # generous: two children share a 2-core machine with other work


def tiny_config():
    from mechinterp.sae_config import SAETrainingConfig

    return SAETrainingConfig(
        block=1, width=32, training_tokens=1024, train_batch_size_tokens=256, context_size=32, store_batch_size_prompts=4,
        n_batches_in_buffer=8, n_batches_for_norm_estimate=2, n_eval_batches=1, heldout_fraction=0.2,
    )


TEXTS = [f"Once upon a time, {name} gave the ball to {other}. They went to the park to play."
         for name, other in [("Tom", "Lily"), ("Mia", "Ben"), ("Sam", "Sue"), ("Max", "Amy")] * 6]


@functools.lru_cache(maxsize=None)
def tiny_model():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from fixtures.tokenizer import gpt2_tokenizer

    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=50257, n_ctx=64,
                                  act_fn="gelu", seed=0, normalization_type="LN", model_name="tiny-cache")
    return HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()


def weights_digest(sae) -> str:
    return hashlib.sha256(sae.W_dec.detach().contiguous().numpy().tobytes()).hexdigest()


def entries(cache: Path) -> list[Path]:
    """Finished cache entries: directories that are not staging."""
    return sorted(p for p in cache.iterdir() if p.is_dir() and ".tmp-" not in p.name)


def stagings(cache: Path) -> list[Path]:
    return sorted(p for p in cache.iterdir() if ".tmp-" in p.name)


def wait_for(path: Path, process: subprocess.Popen | None = None, timeout: float = CHILD_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"child exited with {process.returncode} before {path.name}:\n{process.stdout.read()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {path}")
        time.sleep(0.05)


# --- child process --------------------------------------------------------------------------------


def _child(mode: str, cache: str, work: str) -> None:
    """`train`: wait for work/go, then train_sae, counting trainings in work/trained and writing the
    weights' digest to work/result-<pid>. `hang-in-save`: pause inside the save step (after the weights
    are written to staging, before the record) and tell the parent via work/saving."""
    from mechinterp import sae_training

    work_dir, pid = Path(work), os.getpid()
    model = tiny_model()
    if mode == "train":
        fit = sae_training.fit_sae

        def counted_fit(*args, **kwargs):
            with open(work_dir / "trained", "a") as log:
                log.write(f"{pid}\n")
            return fit(*args, **kwargs)

        sae_training.fit_sae = counted_fit
        (work_dir / f"ready-{pid}").touch()
        wait_for(work_dir / "go", timeout=CHILD_TIMEOUT_S)
        sae = sae_training.train_sae(model, TEXTS, tiny_config(), cache_dir=cache)
        (work_dir / f"result-{pid}").write_text(weights_digest(sae))
    elif mode == "hang-in-save":
        def paused_quality(*args, **kwargs):
            (work_dir / "saving").touch()
            time.sleep(CHILD_TIMEOUT_S)  # the parent SIGKILLs us here

        sae_training.sae_quality = paused_quality
        sae_training.train_sae(model, TEXTS, tiny_config(), cache_dir=cache)
    else:
        raise SystemExit(f"unknown mode {mode}")


def start_child(mode: str, cache: Path, work: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, __file__, mode, str(cache), str(work)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# --- two runs, one training -------------------------------------------------------------------------


def test_two_processes_on_an_empty_cache_train_once_and_both_load_it(tmp_path):
    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    children = [start_child("train", cache, work) for _ in range(2)]
    try:
        for child in children:
            wait_for(work / f"ready-{child.pid}", child)
        (work / "go").touch()  # both call train_sae at once
        outputs = [child.communicate(timeout=CHILD_TIMEOUT_S)[0] for child in children]
    finally:
        for child in children:
            child.kill()
    for child, output in zip(children, outputs):
        assert child.returncode == 0, output
    assert len((work / "trained").read_text().split()) == 1, "the SAE was trained more than once"
    assert "waiting for it" in "".join(outputs)  # the loser really waited on the lock
    digests = {(work / f"result-{child.pid}").read_text() for child in children}
    assert len(digests) == 1
    assert len(entries(cache)) == 1 and stagings(cache) == []


# --- killed, interrupted, outraced ------------------------------------------------------------------


def test_process_killed_while_saving_leaves_no_entry_and_the_next_run_is_clean(tmp_path):
    from mechinterp import sae_training

    cache, work = tmp_path / "cache", tmp_path / "work"
    work.mkdir()
    child = start_child("hang-in-save", cache, work)
    try:
        wait_for(work / "saving", child)
        (staging,) = stagings(cache)
        assert staging.name.endswith(f".tmp-{child.pid}") and (staging / "sae_weights.safetensors").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()  # reaped: a zombie would still answer os.kill(pid, 0)
    assert entries(cache) == []  # a half-saved SAE never looks like an entry

    sae = sae_training.train_sae(tiny_model(), TEXTS, tiny_config(), cache_dir=cache)
    assert stagings(cache) == []  # the dead child's staging was swept
    (entry,) = entries(cache)
    assert sae.cfg.metadata.sae_dir == str(entry) and (entry / "training.json").exists()
    again = sae_training.train_sae(tiny_model(), TEXTS, tiny_config(), cache_dir=cache)
    assert weights_digest(again) == weights_digest(sae)


def test_interrupt_while_saving_removes_staging_and_releases_the_lock(tmp_path, monkeypatch):
    from mechinterp import sae_training

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sae_training, "sae_quality", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sae_training.train_sae(tiny_model(), TEXTS, tiny_config(), cache_dir=tmp_path)
    assert entries(tmp_path) == [] and stagings(tmp_path) == []
    (lock,) = tmp_path.glob("*.lock")
    with open(lock) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held


@pytest.fixture(scope="module")
def winner_entry(tmp_path_factory) -> Path:
    """An entry for tiny_config(), trained once, to stand in for another process's."""
    from mechinterp import sae_training

    cache = tmp_path_factory.mktemp("winner")
    sae_training.train_sae(tiny_model(), TEXTS, tiny_config(), cache_dir=cache)
    (entry,) = entries(cache)
    return entry


def test_rename_lost_to_another_writer_loads_the_winners_entry(tmp_path, winner_entry, monkeypatch):
    from mechinterp import sae_cache, sae_training

    fit = sae_training.fit_sae

    def fit_then_outraced(*args, **kwargs):
        result = fit(*args, **kwargs)
        shutil.copytree(winner_entry, tmp_path / winner_entry.name)  # a writer that ignored the lock saved first
        return result

    monkeypatch.setattr(sae_training, "fit_sae", fit_then_outraced)
    sae = sae_training.train_sae(tiny_model(), TEXTS, tiny_config(), cache_dir=tmp_path)
    winner_record = sae_cache.read_record(winner_entry)
    assert sae.cfg.metadata.training_record["train_seconds"] == winner_record["train_seconds"]
    assert stagings(tmp_path) == [] and entries(tmp_path) == [tmp_path / winner_entry.name]


def test_sweep_removes_staging_of_dead_processes_only(tmp_path):
    from mechinterp import sae_cache

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)  # exited and reaped
    dead = tmp_path / f"m-blocks.1.hook_resid_post-0123.tmp-{dead_pid}"
    alive = tmp_path / f"m-blocks.1.hook_resid_post-4567.tmp-{os.getppid()}"
    entry = tmp_path / "m-blocks.1.hook_resid_post-89ab"
    for directory in (dead, alive, entry):
        directory.mkdir()
        (directory / "cfg.json").write_text("{}")
    assert sae_cache.sweep_stale_staging(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and entry.exists()


if __name__ == "__main__":
    _child(*sys.argv[1:])
