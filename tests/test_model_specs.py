"""Model identity by content (mechinterp.model_specs) and what each bad --model value gets.

Every case of issue 9's list has its outcome here: a local copy of TS-8M is identified and gets
TS-8M's rows; a Llama config, a corrupt config.json, truncated weights are one-line errors; a GPT-2
checkpoint without n_ctx and a valid checkpoint under a path containing "llama" load; a run whose
selected models no claim checks stops at its start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from claims.framework import unchecked_models_message
from claims.options import selected_models
from claims.thresholds import lookup_all
from fixtures.tokenizer import gpt2_tokenizer, gpt2_tokenizer_dir
from fixtures.twins import TWINS, snapshot_dir, snapshot_hash, twin_cache, twin_hf_model
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.model_specs import KNOWN_FINGERPRINTS, KNOWN_MODELS, UnknownModel, fingerprint_of, identify, parse_spec
from mechinterp.models import CheckpointError, WeightsUnavailable, load

ROOT = Path(__file__).resolve().parents[1]
LOGIT_ATOL = 1e-4  # as tests/test_twins.py: float32 reordering ~1e-5, conversion bugs O(0.1)


def centered(logits: torch.Tensor) -> torch.Tensor:
    return logits - logits.mean(-1, keepdim=True)  # center_unembed shifts each position by a constant


def copy_checkpoint(name: str, destination: Path) -> Path:
    """A local checkpoint directory: the twin's snapshot (config, weights, tokenizer) copied."""
    shutil.copytree(snapshot_dir(name), destination)
    return destination


# --- fingerprints --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(TWINS))
def test_each_version_twin_config_is_identified_as_itself(name):
    config = TWINS[name].make_config().to_dict()
    assert fingerprint_of(config) == KNOWN_FINGERPRINTS[name]
    assert identify(fingerprint_of(config)) == name


def test_the_six_fingerprints_are_distinct():
    assert set(KNOWN_FINGERPRINTS) == set(KNOWN_MODELS)
    assert len(set(KNOWN_FINGERPRINTS.values())) == len(KNOWN_FINGERPRINTS)


def test_a_config_saved_by_transformers_is_identified(tmp_path):
    """The on-disk form (config.json as save_pretrained writes it), not only the in-memory dict."""
    TWINS["tiny-stories-33M"].make_config().save_pretrained(str(tmp_path))
    assert identify(fingerprint_of(json.loads((tmp_path / "config.json").read_text()))) == "tiny-stories-33M"


# --- spec parsing ----------------------------------------------------------------------------------


def test_known_names_revisions_and_planted_specs():
    spec = parse_spec("roneneldan/TinyStories-8M@v1")
    assert (spec.kind, spec.name, spec.rows_model, spec.revision) == ("known", "tiny-stories-8M", "tiny-stories-8M", "v1")
    assert parse_spec("gpt2").row_key == "gpt2-small" and parse_spec("gpt2").revision is None
    planted = parse_spec("planted:tinystories-8m/no-s-inhibition")
    assert planted.planted and planted.rows_model == "tiny-stories-8M" and "planted twin" in planted.identity()
    with pytest.raises(UnknownModel, match="empty revision"):
        parse_spec("tiny-stories-8M@")


def test_an_unknown_mutant_is_an_error_listing_the_mutants():
    with pytest.raises(UnknownModel) as err:
        parse_spec("planted:tinystories-8m/no-such-thing")
    assert "unknown mutant 'no-such-thing'" in str(err.value) and "no-s-inhibition" in str(err.value)
    with pytest.raises(pytest.UsageError, match="--model: unknown mutant"):
        selected_models(["planted:gpt2-small,planted:tinystories-8m/no-such-thing"], ())


def test_a_local_copy_of_ts8m_is_identified_and_gets_its_rows(tmp_path):
    directory = copy_checkpoint("tiny-stories-8M", tmp_path / "my-copy")
    spec = parse_spec(str(directory))
    assert (spec.kind, spec.rows_model, spec.identified_by) == ("local", "tiny-stories-8M", "config")
    assert spec.identity() == "local directory, identified as tiny-stories-8M by its config"
    assert lookup_all("E2.logit-diff", spec) == lookup_all("E2.logit-diff", "tiny-stories-8M") != []


def test_override_takes_a_renamed_copy_as_a_known_model_and_refuses_another_architecture(tmp_path):
    directory = copy_checkpoint("tiny-stories-1M", tmp_path / "finetuned")
    spec = parse_spec(f"{directory}=tiny-stories-1M")
    assert (spec.rows_model, spec.identified_by) == ("tiny-stories-1M", "override") and "taken as" in spec.identity()
    with pytest.raises(UnknownModel, match="is not tiny-stories-8M's architecture"):
        parse_spec(f"{directory}=tiny-stories-8M")
    with pytest.raises(UnknownModel, match="override 'gpt-5' is not a known model"):
        parse_spec(f"{directory}=gpt-5")


def test_an_unidentified_gpt_neo_checkpoint_gets_family_rows_only(tmp_path):
    config = TWINS["tiny-stories-8M"].make_config()
    config.hidden_size = 96  # no TinyStories version is 96 wide
    config.save_pretrained(str(tmp_path))
    spec = parse_spec(str(tmp_path))
    assert spec.rows_model is None and spec.row_key == "tiny-stories-(unidentified)"
    assert "unidentified GPTNeoForCausalLM checkpoint" in spec.identity() and "no checkpoint's thesis numbers" in spec.identity()
    assert lookup_all("E2.logit-diff", spec) == [] and lookup_all("E0.smallest-ioi", spec) == []


@pytest.mark.parametrize(
    "config_text, fault",
    [
        ('{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}', "LlamaForCausalLM'] is not one of GPTNeoForCausalLM, GPT2LMHeadModel"),
        ('{"architectures": ["GPTNeoForCausalLM"], "hidden_size": 64', "config.json: not valid JSON"),
        ("[1, 2]", "config.json: expected a JSON object, got list"),
        ('{"architectures": ["GPTNeoForCausalLM"], "hidden_size": "64"}', "needs 'hidden_size' (int), got '64'"),
        ('{"architectures": ["GPT2LMHeadModel"], "n_embd": 64}', "needs 'n_layer' (int), got None"),
    ],
    ids=["llama", "corrupt-json", "not-an-object", "wrong-type", "missing-field"],
)
def test_a_bad_config_is_one_line_naming_the_file(tmp_path, config_text, fault):
    (tmp_path / "config.json").write_text(config_text)
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnknownModel) as err:
        parse_spec(str(tmp_path))
    assert fault in str(err.value) and "\n" not in str(err.value)
    assert str(tmp_path) in str(err.value)


# --- loading local checkpoints --------------------------------------------------------------------


def test_truncated_weights_are_one_line_naming_the_file(tmp_path):
    directory = copy_checkpoint("tiny-stories-1M", tmp_path / "truncated")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    parse_spec(str(directory))  # the config is fine: only loading finds the fault
    with pytest.raises(CheckpointError) as err:
        load(str(directory))
    assert "model.safetensors" in str(err.value) and "cannot be loaded" in str(err.value) and "\n" not in str(err.value)


def test_garbage_weights_are_one_line_naming_the_file(tmp_path):
    directory = copy_checkpoint("tiny-stories-1M", tmp_path / "garbage")
    (directory / "model.safetensors").write_bytes(b"not a safetensors file" * 100)
    with pytest.raises(CheckpointError, match="model.safetensors.*cannot be loaded"):
        load(str(directory))


def test_a_valid_checkpoint_under_a_path_containing_llama_loads_as_what_it_is(tmp_path):
    """transformer_lens alone would read 'llama' in the path as the architecture."""
    directory = copy_checkpoint("tiny-stories-1M", tmp_path / "llama-and-gemma-experiments" / "ts")
    with twin_cache(()):  # an empty offline hub: the directory alone must suffice
        model = load(str(directory))
    assert model.cfg.original_architecture == "GPTNeoForCausalLM" and model.cfg.d_model == 64
    batch = make_batch(gpt2_tokenizer(), protocol_prompts())
    with torch.no_grad():
        gap = (centered(model(batch.tokens)) - centered(twin_hf_model("tiny-stories-1M")(batch.tokens).logits)).abs().max()
    assert gap.item() < LOGIT_ATOL


def test_a_gpt2_checkpoint_without_n_ctx_loads(tmp_path):
    """Current transformers writes no n_ctx for GPT-2, which transformer_lens's converter reads."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=128, architectures=["GPT2LMHeadModel"])
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(str(tmp_path))
    saved = json.loads((tmp_path / "config.json").read_text())
    saved.pop("n_ctx", None)
    (tmp_path / "config.json").write_text(json.dumps(saved))
    for item in gpt2_tokenizer_dir().iterdir():
        shutil.copy(item, tmp_path / item.name)
    assert parse_spec(str(tmp_path)).row_key == "gpt2-(unidentified)"
    model = load(str(tmp_path))
    assert model.cfg.n_ctx == 128
    batch = make_batch(gpt2_tokenizer(), protocol_prompts())
    with torch.no_grad():
        assert (centered(model(batch.tokens)) - centered(hf(batch.tokens).logits)).abs().max().item() < LOGIT_ATOL


def test_a_revision_loads_that_snapshot_and_an_absent_one_is_unavailable():
    with twin_cache(["tiny-stories-1M"]):
        model = load(f"tiny-stories-1M@{snapshot_hash('tiny-stories-1M')}")
        assert model.cfg.d_model == 64
        with pytest.raises(WeightsUnavailable, match="at revision 0123abc"):
            load("tiny-stories-1M@0123abc")


# --- a run that would check nothing on a selected model ---------------------------------------------


def test_unchecked_models_message_names_the_models_no_test_checks():
    class Item:  # the two attributes the check reads
        def __init__(self, spec):
            self.callspec = type("C", (), {"params": {"subject": spec}})()

        def get_closest_marker(self, name):
            return object() if name == "claim" else None

        def iter_markers(self):
            return []

    specs = selected_models(["tiny-stories-8M,tiny-stories-33M"], ())
    message = unchecked_models_message([Item(specs[0])], specs)
    assert message.startswith("no selected claim checks tiny-stories-33M:") and "--allow-unchecked-models" in message
    assert unchecked_models_message([Item(specs[0]), Item(specs[1])], specs) is None


def run_claims(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_run_whose_model_gets_no_claim_stops_at_the_start(tmp_path):
    """E2.logit-diff has no row for tiny-stories-33M: that run would check nothing on it."""
    result = run_claims("claims/thesis/test_e2_logit_diff.py", "--model", "tiny-stories-33M", "--report-dir", str(tmp_path / "out"))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR
    assert "no selected claim checks tiny-stories-33M" in result.stderr
    allowed = run_claims("claims/thesis/test_e2_logit_diff.py", "--co", "--model", "tiny-stories-33M",
                         "--allow-unchecked-models", "--report-dir", str(tmp_path / "out2"))
    assert allowed.returncode == 0, allowed.stdout[-2000:]


def test_a_broken_local_checkpoint_stops_the_run_before_any_claim(tmp_path):
    directory = copy_checkpoint("tiny-stories-1M", tmp_path / "broken")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_claims("claims/thesis/test_e0_family.py", "claims/thesis/test_e2_logit_diff.py", "--model", str(directory),
                        "--allow-unchecked-models", "--report-dir", str(tmp_path / "out"))
    assert result.returncode == pytest.ExitCode.USAGE_ERROR, result.stdout[-2000:]
    output = result.stdout + result.stderr
    assert f"--model {directory}: {directory}: weights (model.safetensors) cannot be loaded" in output
    assert " passed" not in output and " failed" not in output  # stopped before any claim ran


def test_every_model_version_has_its_tox_env_and_matrix_run():
    """A model version is one MODEL_VERSIONS entry; tox.ini must name it too (its env and its matrix run), or this fails."""
    import configparser

    from mechinterp.model_specs import MODEL_VERSIONS

    tox = configparser.ConfigParser(interpolation=None)
    tox.read(ROOT / "tox.ini")
    envs = {env.strip() for env in tox["tox"]["env_list"].split(",")}
    matrix = tox["testenv:matrix"]["commands"]
    for version in MODEL_VERSIONS:
        assert version.name in envs, f"tox.ini env_list lacks {version.name}"
        assert f"--model {version.name} " in matrix, f"tox.ini's matrix env does not run {version.name}"
