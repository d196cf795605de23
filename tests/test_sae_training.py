"""mechinterp/sae_training.py, sae_config.py, sae_cache.py and sae_options.py: config checks, the keyed cache (reuse, corrupt and mismatched entries),
and ground truth: on planted:tinystories-8m with its story corpus, the gated SAE trained here recovers
the planted trigger directions, the role finder picks those features, and ablating them does what the
planted mechanism dictates.

The planted SAEs are the claims' own (claims.sae_sources.PLANTED_SAE_CONFIG, disk-cached), so
training happens once whether this file or the claims run first.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import claims.sae_sources as sources
import claims.thesis.e3_features as e3
from fixtures import planted
from fixtures.tokenizer import gpt2_tokenizer
from mechinterp import features, sae_cache, sae_options, sae_training
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.sae_cache import SAECacheError
from mechinterp.sae_config import ARCHITECTURE_KNOBS, SAETrainingConfig
from mechinterp.sae_options import SAEOptionError
from tests.plugin_fakes import FAKE_MODELS, UNUSED_PLUGINS, claims_pytester  # noqa: F401 - a fixture

TINY = SAETrainingConfig(
    block=1, width=64, training_tokens=2048, train_batch_size_tokens=256, context_size=32, store_batch_size_prompts=4,
    n_batches_in_buffer=8, n_batches_for_norm_estimate=2, n_eval_batches=1, heldout_fraction=0.2,
)
TEXTS = [f"Once upon a time, {name} gave the ball to {other}. They went to the park to play."
         for name, other in [("Tom", "Lily"), ("Mia", "Ben"), ("Sam", "Sue"), ("Max", "Amy")] * 6]


@functools.lru_cache(maxsize=None)
def tiny_model(seed: int = 0) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50257, n_ctx=64,
                                  act_fn="gelu", seed=seed, normalization_type="LN", model_name=f"tiny-{seed}")
    return HookedTransformer(cfg, tokenizer=gpt2_tokenizer()).eval()


# --- config --------------------------------------------------------------------------------------


def test_config_rejects_bad_settings_with_clear_errors():
    with pytest.raises(ValueError, match="n_batches_in_buffer >= 32"):
        SAETrainingConfig(context_size=128, train_batch_size_tokens=4096, n_batches_in_buffer=4)
    with pytest.raises(ValueError, match="less than one batch"):
        SAETrainingConfig(training_tokens=100, train_batch_size_tokens=4096)
    with pytest.raises(ValueError, match="unknown SAETrainingConfig field"):
        SAETrainingConfig.from_dict({"l1": 3})
    assert SAETrainingConfig().d_sae(256) == 4096  # thesis width: 16 x d_model
    assert SAETrainingConfig(width=100).d_sae(256) == 100
    assert SAETrainingConfig(block=5).hook_name == "blocks.5.hook_resid_post"
    with pytest.raises(ValueError, match="outside the model's 2 blocks"):
        sae_training.train_sae(tiny_model(), TEXTS, dataclasses.replace(TINY, block=2), cache_dir="unused")


def test_cache_key_changes_with_config_weights_and_corpus():
    model = tiny_model()
    mid, cid = sae_cache.model_identity(model), sae_cache.corpus_identity(TEXTS, TINY.dataset_path)
    key = sae_cache.cache_key(TINY, mid, cid)
    assert key == sae_cache.cache_key(TINY, sae_cache.model_identity(tiny_model()), cid)
    assert key != sae_cache.cache_key(dataclasses.replace(TINY, l1_coefficient=4.0), mid, cid)
    assert key != sae_cache.cache_key(TINY, sae_cache.model_identity(tiny_model(seed=1)), cid)
    assert key != sae_cache.cache_key(TINY, mid, sae_cache.corpus_identity(TEXTS[:-1], TINY.dataset_path))
    assert sae_cache.corpus_identity(None, "roneneldan/TinyStories")["source"] == "huggingface"
    # how the SAE is evaluated is not what is trained: the same entry
    assert key == sae_cache.cache_key(dataclasses.replace(TINY, next_token_loss=False), mid, cid)


def test_cache_key_of_a_gated_config_is_the_one_made_before_the_architecture_knob():
    # main cdcf427's keys for these configs, before `architecture` existed: cached gated SAEs are still found
    assert sae_cache.cache_key(SAETrainingConfig(), {"model_name": "m"}, {"source": "texts"}) == "4056a5f060f7eae0"
    assert sae_cache.cache_key(sources.PLANTED_SAE_CONFIG, {"model_name": "m"}, {"source": "texts"}) == "bb5468d22ab0a380"


def test_cache_key_differs_per_architecture_and_holds_only_its_knobs():
    mid, cid = sae_cache.model_identity(tiny_model()), sae_cache.corpus_identity(TEXTS, TINY.dataset_path)
    knobs = {"gated": {}, **OTHER_ARCHITECTURES}
    keys = {arch: sae_cache.cache_key(dataclasses.replace(TINY, architecture=arch, **knobs[arch]), mid, cid) for arch in knobs}
    assert set(knobs) == set(ARCHITECTURE_KNOBS) and len(set(keys.values())) == len(knobs) and keys["gated"] == sae_cache.cache_key(TINY, mid, cid)
    topk = dataclasses.replace(TINY, architecture="topk", topk_k=8)
    assert sae_cache.cache_key(topk, mid, cid) != sae_cache.cache_key(dataclasses.replace(topk, topk_k=9), mid, cid)
    # topk trains with no L1 penalty: a config differing only there trains the same SAE, so shares its entry
    assert sae_cache.cache_key(topk, mid, cid) == sae_cache.cache_key(dataclasses.replace(topk, l1_coefficient=9.0), mid, cid)
    jumprelu = dataclasses.replace(TINY, architecture="jumprelu")
    assert (sae_cache.cache_key(jumprelu, mid, cid)
            != sae_cache.cache_key(dataclasses.replace(jumprelu, jumprelu_l0_coefficient=2.0), mid, cid))
    assert "architecture" not in TINY.key_dict() and topk.key_dict()["architecture"] == "topk"
    assert SAETrainingConfig.from_dict(topk.key_dict()) == topk  # a record's config gives back the config


# --- training and the cache ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    cache = tmp_path_factory.mktemp("sae-cache")
    sae = sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=cache)
    return sae, cache


def test_next_token_loss_off_leaves_it_out_of_the_quality(tmp_path):
    """PLANTED_SAE_CONFIG's setting (a planted model is not a language model): explained variance and L0 only."""
    assert sources.PLANTED_SAE_CONFIG.next_token_loss is False
    sae = sae_training.train_sae(tiny_model(), TEXTS, dataclasses.replace(TINY, next_token_loss=False), cache_dir=tmp_path)
    assert set(sae.cfg.metadata.training_record["quality"]) == {"explained_variance", "l0"}


def test_train_sae_saves_weights_record_and_quality(tiny_trained):
    sae, cache = tiny_trained
    assert type(sae).__name__ == "GatedSAE" and sae.cfg.d_sae == 64
    assert sae.cfg.metadata.hook_name == "blocks.1.hook_resid_post"
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5, rtol=0)  # folded decoder norms
    record = sae.cfg.metadata.training_record
    assert record["config"] == TINY.key_dict() and record["model"]["model_name"] == "tiny-0"
    assert set(record["quality"]) >= {"explained_variance", "l0", "ce_loss_clean", "ce_loss_with_sae"}
    assert record["tokens_per_second"] > 0
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]  # beside it: its .lock file
    assert {p.name for p in entry.iterdir()} >= {"cfg.json", "sae_weights.safetensors", "training.json"}


# The other architectures' own knobs, small enough for the tiny SAE (width 64)
OTHER_ARCHITECTURES = {"standard": {}, "jumprelu": {}, "topk": {"topk_k": 8}}


@pytest.mark.parametrize("architecture", list(OTHER_ARCHITECTURES))
def test_each_architecture_trains_sae_lens_own_sae(architecture, tmp_path):
    from sae_lens.registry import get_sae_class

    config = dataclasses.replace(TINY, architecture=architecture, **OTHER_ARCHITECTURES[architecture])
    sae = sae_training.train_sae(tiny_model(), TEXTS, config, cache_dir=tmp_path)
    assert type(sae) is get_sae_class(architecture)[0] and sae.cfg.architecture() == architecture
    record = sae.cfg.metadata.training_record
    assert record["config"]["architecture"] == architecture and SAETrainingConfig.from_dict(record["config"]) == config
    torch.testing.assert_close(sae.W_dec.norm(dim=-1), torch.ones(64), atol=1e-5, rtol=0)  # folded decoder norms
    # what features.py's ablation and attribution assume: the reconstruction is b_dec + sum_f a_f W_dec[f]
    resid = features.residual_at(tiny_model(), make_batch(gpt2_tokenizer(), protocol_prompts()).tokens, config.hook_name)
    acts = sae.encode(resid)
    assert acts.gt(0).any()
    torch.testing.assert_close(sae.decode(acts), acts @ sae.W_dec + sae.b_dec, atol=1e-5, rtol=1e-5)
    if architecture == "topk":
        assert record["quality"]["l0"] == 8  # k reached sae_lens: exactly k features per token
        assert acts.gt(0).sum(-1).max() <= 8
    else:
        assert record["quality"]["l0"] > 0


def test_cached_sae_is_reused_not_retrained(tiny_trained, monkeypatch):
    sae, cache = tiny_trained

    def no_training(*args, **kwargs):
        raise AssertionError("retrained although a cache entry exists")

    monkeypatch.setattr(sae_training, "fit_sae", no_training)
    again = sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=cache)
    assert torch.equal(again.W_dec, sae.W_dec) and torch.equal(again.W_enc, sae.W_enc)


def _copy_entry(tiny_trained, tmp_path):
    import shutil

    _, cache = tiny_trained
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    target = tmp_path / entry.name
    shutil.copytree(entry, target)
    return target


def test_corrupt_or_mismatched_entries_raise_instead_of_retraining(tiny_trained, tmp_path, monkeypatch):
    monkeypatch.setattr(sae_training, "fit_sae", lambda *a, **k: pytest.fail("retrained over a bad entry"))
    entry = _copy_entry(tiny_trained, tmp_path)
    (entry / "sae_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(SAECacheError, match="cannot load SAE weights.*delete it to retrain"):
        sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=tmp_path)

    entry = _copy_entry(tiny_trained, tmp_path / "b")
    (entry / "training.json").write_text("{ truncated")
    with pytest.raises(SAECacheError, match="corrupt"):
        sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=tmp_path / "b")

    entry = _copy_entry(tiny_trained, tmp_path / "c")
    record = json.loads((entry / "training.json").read_text())
    record["corpus"]["n_texts"] += 1  # an entry whose record does not match its key
    (entry / "training.json").write_text(json.dumps(record))
    with pytest.raises(SAECacheError, match="different corpus"):
        sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=tmp_path / "c")

    entry = _copy_entry(tiny_trained, tmp_path / "d")
    (entry / "training.json").unlink()
    with pytest.raises(SAECacheError, match="no training.json"):
        sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=tmp_path / "d")


# Each knob out of its range: (field, bad value, what the one-line error says)
BAD_SETTINGS = [
    ("block", -1, "block must be >= 0, got -1"),
    ("hook_point", "resid_post", "hook_point must be one of hook_resid_pre, .*got 'resid_post'"),
    ("width", 0, "width must be >= 1, got 0"),
    ("width_factor", 0, "width_factor must be >= 1"),
    ("l1_coefficient", -3.0, r"l1_coefficient must be > 0, got -3.0"),
    ("l1_coefficient", 0, r"l1_coefficient must be > 0, got 0.0"),
    ("l1_warm_up_steps", -1, "l1_warm_up_steps must be >= 0"),
    ("lr", 0.0, r"lr must be in \(0, 1\], got 0.0"),
    ("lr", 3.0, r"lr must be in \(0, 1\], got 3.0"),
    ("lr", float("nan"), "lr must be finite, got nan"),
    ("lr_warm_up_steps", -5, "lr_warm_up_steps must be >= 0"),
    ("lr_scheduler_name", "cosine", "lr_scheduler_name must be one of constant, .*got 'cosine'"),
    ("training_tokens", 0, "training_tokens must be >= 1, got 0"),
    ("training_tokens", 1e6, r"training_tokens must be an int, got 1000000.0 \(float\)"),
    ("context_size", 0, "context_size must be >= 1"),
    ("train_batch_size_tokens", -4096, "train_batch_size_tokens must be >= 1"),
    ("store_batch_size_prompts", 0, "store_batch_size_prompts must be >= 1"),
    ("n_batches_in_buffer", 0, "n_batches_in_buffer must be >= 1"),
    ("n_batches_for_norm_estimate", 0, "n_batches_for_norm_estimate must be >= 1"),
    ("n_eval_batches", 0, "n_eval_batches must be >= 1"),
    ("normalize_activations", "unit", "normalize_activations must be one of none, .*got 'unit'"),
    ("exclude_special_tokens", "yes", r"exclude_special_tokens must be a bool, got 'yes' \(str\)"),
    ("seed", -1, r"seed must be in \[0, 2\*\*63\), got -1"),
    ("seed", True, r"seed must be an int, got True \(bool\)"),
    ("device", "gpu", "device must be a torch device .*got 'gpu'"),
    ("dtype", "int8", "dtype must be one of float32, .*got 'int8'"),
    ("dataset_path", "", "dataset_path must be a Hugging Face dataset name"),
    ("heldout_fraction", 1.0, r"heldout_fraction must be in \[0, 1\), got 1.0"),
    ("heldout_fraction", -0.1, r"heldout_fraction must be in \[0, 1\), got -0.1"),
    ("architecture", "relu", "architecture must be one of gated, standard, jumprelu, topk; got 'relu'"),
    ("architecture", "batchtopk", "architecture must be one of gated, .*got 'batchtopk'"),
    ("topk_k", 8, "topk_k applies to architecture 'topk' only; architecture is 'gated'"),
    ("jumprelu_bandwidth", 0.1, "jumprelu_bandwidth applies to architecture 'jumprelu' only; architecture is 'gated'"),
]
# The architectures' own knobs, under their architecture
BAD_ARCHITECTURE_SETTINGS = [
    ({"architecture": "topk", "topk_k": 0}, "topk_k must be >= 1, got 0"),
    ({"architecture": "topk", "topk_k": 65, "width": 64}, "topk_k 65 is more than the SAE's width 64"),
    ({"architecture": "topk", "topk_k": 2.0}, r"topk_k must be an int, got 2.0 \(float\)"),
    ({"architecture": "topk", "normalize_activations": "layer_norm"}, "architecture 'topk' cannot train with normalize_act"),
    ({"architecture": "jumprelu", "jumprelu_l0_coefficient": 0}, "jumprelu_l0_coefficient must be > 0, got 0.0"),
    ({"architecture": "jumprelu", "jumprelu_init_threshold": -0.1}, "jumprelu_init_threshold must be > 0"),
    ({"architecture": "jumprelu", "jumprelu_bandwidth": 0.0}, "jumprelu_bandwidth must be > 0"),
]


@pytest.mark.parametrize("fields, message", BAD_ARCHITECTURE_SETTINGS)
def test_config_range_checks_each_architectures_knobs(fields, message):
    with pytest.raises(ValueError, match=message) as raised:
        SAETrainingConfig(**fields)
    assert "\n" not in str(raised.value)


def test_train_sae_rejects_a_topk_k_over_the_width_it_takes_from_the_model():
    config = dataclasses.replace(TINY, width=None, architecture="topk", topk_k=513)  # width 16 x d_model 32 = 512
    with pytest.raises(ValueError, match="topk_k 513 is more than the SAE's width 512"):
        sae_training.train_sae(tiny_model(), TEXTS, config, cache_dir="unused")


@pytest.mark.parametrize("name, value, message", BAD_SETTINGS, ids=[f"{n}={v!r}" for n, v, _ in BAD_SETTINGS])
def test_config_range_checks_each_field(name, value, message):
    with pytest.raises(ValueError, match=message) as raised:
        SAETrainingConfig(**{name: value})
    assert "\n" not in str(raised.value)


def test_config_takes_ints_for_floats_with_one_cache_key():
    assert SAETrainingConfig(l1_coefficient=40).to_dict() == SAETrainingConfig(l1_coefficient=40.0).to_dict()
    assert isinstance(SAETrainingConfig(l1_coefficient=40).l1_coefficient, float)
    assert sources.PLANTED_SAE_CONFIG == SAETrainingConfig.from_dict(sources.PLANTED_SAE_CONFIG.to_dict())


def test_train_sae_rejects_a_context_longer_than_the_models():
    with pytest.raises(ValueError, match="context_size 128 is longer than the model's context \\(64\\)"):
        sae_training.train_sae(tiny_model(), TEXTS, dataclasses.replace(TINY, context_size=128), cache_dir="unused")


# --- command-line options: --sae-config FILE.json, --sae-dir DIR ------------------------------------

BAD_CONFIG_FILES = [  # (file content or None for no file, what the one-line error says after the file name)
    (None, "no such file"),
    ("{ not json", "is not valid JSON"),
    ("[1, 2]", "holds a JSON array, expected an object"),
    ('"l1_coefficient"', "holds a JSON string, expected an object"),
    ('{"l1": 20}', r"unknown SAETrainingConfig field\(s\) \['l1'\]; known: \[.*'l1_coefficient'"),
    ('{"l1_coefficient": "20"}', r"l1_coefficient must be a float, got '20' \(str\)"),
    ('{"l1_coefficient": -20}', "l1_coefficient must be > 0, got -20.0"),
    ('{"training_tokens": 100}', "less than one batch"),
    ('{"architecture": "relu"}', "architecture must be one of gated, standard, jumprelu, topk; got 'relu'"),
    ('{"architecture": "topk", "topk_k": 0}', "topk_k must be >= 1, got 0"),
]


@pytest.mark.parametrize("content, message", BAD_CONFIG_FILES)
def test_sae_config_file_problems_are_one_line_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "sae.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SAEOptionError, match=message) as raised:
        sae_options.sae_config_from_file(path)
    assert str(raised.value).startswith(f"--sae-config {path}: ") and "\n" not in str(raised.value)


def test_a_bad_architecture_stops_the_run_at_its_start_before_any_model_loads(claims_pytester):
    claims_pytester.path.joinpath("fake_models.py").write_text(
        FAKE_MODELS + "\ndef fake_load(spec):\n    raise AssertionError(f'{spec} loaded')\n")
    claims_pytester.path.joinpath("sae.json").write_text('{"architecture": "relu"}')
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "planted:tinystories-8m",
                                       "--sae-config", "sae.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.stderr.lines if "architecture must be one of" in line]
    assert errors == ["ERROR: --sae-config sae.json: architecture must be one of gated, standard, jumprelu, topk; "
                      "got 'relu' (fields the file does not set come from PLANTED_SAE_CONFIG, the planted twin's)"]
    assert "loaded" not in result.stdout.str() + result.stderr.str()


def test_sae_config_file_overrides_its_base(tmp_path):
    path = tmp_path / "sae.json"
    path.write_text('{"l1_coefficient": 20, "seed": 3}')
    config = sae_options.sae_config_from_file(path, base=sources.PLANTED_SAE_CONFIG)
    assert config == dataclasses.replace(sources.PLANTED_SAE_CONFIG, l1_coefficient=20.0, seed=3)
    assert sae_options.sae_config_from_file(path).width is None  # the default base
    with pytest.raises(SAEOptionError, match="not a file"):
        sae_options.sae_config_from_file(tmp_path)


def test_e3_reads_sae_config_over_each_model_kinds_defaults(tmp_path):
    path = tmp_path / "sae.json"
    path.write_text('{"n_batches_in_buffer": 2}')  # fits the planted base's batches of 128, not the default 4096
    assert sources.read_sae_config(str(path), planted=True).n_batches_in_buffer == 2
    with pytest.raises(SAEOptionError, match="use n_batches_in_buffer >= 32"):
        sources.read_sae_config(str(path), planted=False)
    sources.check_sae_options(str(path), None, specs=["planted:tinystories-8m"])
    with pytest.raises(SAEOptionError, match="use n_batches_in_buffer >= 32"):
        sources.check_sae_options(str(path), None, specs=["planted:tinystories-8m", "tiny-stories-8M"])
    path.write_text('{"training_tokens": 100}')  # under the planted batch of 128
    with pytest.raises(SAEOptionError, match="less than one batch.*come from PLANTED_SAE_CONFIG"):
        sources.check_sae_options(str(path), None, specs=["planted:tinystories-8m"])
    assert sources.read_sae_config(None, planted=False) is None


def _sae_dir_with_entry(tiny_trained, tmp_path, name="blocks.1"):
    """--sae-dir layout: one SAE per subdirectory, here a copy of the trained tiny entry."""
    import shutil

    _, cache = tiny_trained
    (entry,) = [p for p in cache.iterdir() if p.is_dir()]
    root = tmp_path / "saes"
    shutil.copytree(entry, root / name)
    return root


def test_check_sae_dir_maps_hooks_to_directories(tiny_trained, tmp_path):
    root = _sae_dir_with_entry(tiny_trained, tmp_path)
    (root / "README.md").write_text("notes beside the SAEs are ignored")
    assert sae_options.check_sae_dir(root) == {"blocks.1.hook_resid_post": root / "blocks.1"}
    assert sae_options.check_sae_dir(root / "blocks.1") == {"blocks.1.hook_resid_post": root / "blocks.1"}


def _break(root, how: str):
    sae = root / "blocks.1"
    if how == "missing":
        return root / "nowhere"
    if how == "a file":
        (root / "file").write_text("x")
        return root / "file"
    if how == "empty":
        (root / "empty").mkdir()
        return root / "empty"
    if how == "garbage subdirectory":
        (root / "junk").mkdir()
        (root / "junk" / "notes.txt").write_text("x")
    elif how == "cfg not json":
        (sae / "cfg.json").write_text("{ truncated")
    elif how == "cfg a list":
        (sae / "cfg.json").write_text("[]")
    elif how == "cfg without hook":
        (sae / "cfg.json").write_text('{"d_in": 32, "d_sae": 64}')
    elif how == "cfg without d_sae":
        (sae / "cfg.json").write_text('{"d_in": 32, "metadata": {"hook_name": "blocks.1.hook_resid_post"}}')
    elif how == "no weights":
        (sae / "sae_weights.safetensors").unlink()
    elif how == "weights garbage":
        (sae / "sae_weights.safetensors").write_bytes(b"not safetensors at all")
    elif how == "record garbage":
        (sae / "training.json").write_text("{ truncated")
    elif how == "record lacks fields":
        (sae / "training.json").write_text('{"key": "abc"}')
    elif how == "record bad config":
        record = json.loads((sae / "training.json").read_text())
        record["config"]["l1_coefficient"] = -1.0
        (sae / "training.json").write_text(json.dumps(record))
    elif how == "two SAEs for one hook":
        import shutil

        shutil.copytree(sae, root / "copy")
    return root


BROKEN_SAE_DIRS = [  # (what is wrong, what the one-line error says)
    ("missing", "no such directory"),
    ("a file", "not a directory"),
    ("empty", "holds no SAE"),
    ("garbage subdirectory", "junk holds no SAE \\(no cfg.json\\)"),
    ("cfg not json", "blocks.1/cfg.json is not valid JSON"),
    ("cfg a list", "blocks.1/cfg.json holds a JSON array"),
    ("cfg without hook", "blocks.1/cfg.json names no hook"),
    ("cfg without d_sae", "blocks.1/cfg.json lacks positive integer d_sae"),
    ("no weights", "blocks.1 has no sae_weights.safetensors"),
    ("weights garbage", "blocks.1/sae_weights.safetensors is not a safetensors file"),
    ("record garbage", "blocks.1/training.json is not valid JSON"),
    ("record lacks fields", "blocks.1/training.json lacks config, model, corpus"),
    ("record bad config", "blocks.1/training.json: bad config \\(l1_coefficient must be > 0"),
    ("two SAEs for one hook", "two SAEs for blocks.1.hook_resid_post"),
]


@pytest.mark.parametrize("how, message", BROKEN_SAE_DIRS, ids=[how for how, _ in BROKEN_SAE_DIRS])
def test_check_sae_dir_problems_are_one_line_errors_naming_the_file(tiny_trained, tmp_path, how, message):
    path = _break(_sae_dir_with_entry(tiny_trained, tmp_path), how)
    with pytest.raises(SAEOptionError, match=message) as raised:
        sae_options.check_sae_dir(path)
    assert str(raised.value).startswith(f"--sae-dir {path}: ") and "\n" not in str(raised.value)


def test_record_that_is_not_an_object_is_a_cache_error(tiny_trained, tmp_path):
    entry = _copy_entry(tiny_trained, tmp_path)
    (entry / "training.json").write_text('"key config model corpus"')  # a string "contains" every field name
    with pytest.raises(SAECacheError, match="holds a JSON string, not a training record"):
        sae_cache.load_sae_dir(entry)
    (entry / "training.json").write_text('{"key": 1, "config": [], "model": {}, "corpus": {}}')
    with pytest.raises(SAECacheError, match="bad config or model in the record"):
        sae_cache.load_sae_dir(entry)


def test_training_is_deterministic(tiny_trained, tmp_path):
    sae, _ = tiny_trained
    again = sae_training.train_sae(tiny_model(), TEXTS, TINY, cache_dir=tmp_path)
    torch.testing.assert_close(again.W_dec, sae.W_dec, rtol=0, atol=0)


def test_shuffled_batches_cycle_every_row_each_epoch():
    acts = torch.arange(10.0)[:, None]
    batches = sae_training.shuffled_batches(acts, batch_size=5, seed=0)
    epoch = torch.cat([next(batches), next(batches)])
    assert sorted(epoch[:, 0].tolist()) == list(range(10))
    with pytest.raises(ValueError, match="do not fill one training batch"):
        next(sae_training.shuffled_batches(acts, batch_size=11, seed=0))


# --- ground truth on the planted twin ------------------------------------------------------------

RECOVERY_COSINE = 0.9  # brief: some decoder direction within cos 0.9 of each planted trigger direction

# Measured causes of the twin's two recovery gaps (strict xfails: they fail the test until fixed).
NAMES6_NOT_RECOVERED = (
    "names@6 (norm 1) is written on every name next to the name's own code; the SAE folds it into per-name "
    "features: best live decoder cosine 0.30")
L6_ROLE_IS_A_MIXTURE = (
    "the twin's residual at a giving ' to' after block 6 is to@6 (norm 5) plus ~3.2 of other content (the token, "
    "is-to, its position code, the names H6.11 moved): cosine 0.84 with to@6. The SAE's feature for that token, the "
    "top one at END, mirrors it (cos 0.84-0.89 over SAE seeds 0-4); live features at cos >= 0.9 exist (0.92) but "
    "fire less at END")

# (block, planted direction): a LIVE decoder direction (one that fires on the story corpus) recovers it;
# a dead feature's decoder row was never trained, so its cosine would prove nothing.
PLANTED_DIRECTIONS = [
    (5, "to@5"), (5, "verb@5"), (5, "infinitive-to@5"), (6, "to@6"),
    pytest.param(6, "names@6", marks=pytest.mark.xfail(strict=True, reason=NAMES6_NOT_RECOVERED)),
]
# (block, role, planted direction): the role finder picks a feature that recovers the direction
PLANTED_ROLES = [
    (5, "L5-to", "to@5"), (5, "L5-gave", "verb@5"), (5, "L5-infinitive-to", "infinitive-to@5"),
    pytest.param(6, "L6-to", "to@6", marks=pytest.mark.xfail(strict=True, reason=L6_ROLE_IS_A_MIXTURE)),
    pytest.param(6, "L6-negative-names", "names@6", marks=pytest.mark.xfail(strict=True, reason=NAMES6_NOT_RECOVERED)),
]


@functools.lru_cache(maxsize=None)
def planted_twin():
    return planted.build("tinystories-8m")


@functools.lru_cache(maxsize=None)
def planted_saes():
    model = planted_twin()
    return sources.SAESet("planted:tinystories-8m", model, config=sources.PLANTED_SAE_CONFIG)


@functools.lru_cache(maxsize=None)
def protocol_batch():
    return make_batch(gpt2_tokenizer(), protocol_prompts())


@functools.lru_cache(maxsize=None)
def decoder_cosines(block: int, direction: str) -> torch.Tensor:
    """[d_sae] cosine of each unit decoder row with the planted direction."""
    decoder = features.unit_decoder(planted_saes()[block])
    return decoder @ planted_twin().planted.directions[direction].to(decoder.dtype)


@functools.lru_cache(maxsize=None)
def live(block: int) -> torch.Tensor:
    texts = sources.planted_corpus()[: e3.RANDOM_CONTROL_LIVE_TEXTS]
    return features.firing_rates(planted_twin(), planted_saes()[block], texts) > 0


@pytest.mark.parametrize("block, direction", PLANTED_DIRECTIONS)
def test_planted_sae_recovers_trigger_direction(block, direction):
    cosines = decoder_cosines(block, direction)
    best_live = cosines.masked_fill(~live(block), float("-inf")).max()
    assert best_live >= RECOVERY_COSINE, f"{direction}: best live decoder cosine {best_live:.3f} (any feature: {cosines.max():.3f})"


@pytest.mark.parametrize("block, role, direction", PLANTED_ROLES)
def test_role_finder_picks_the_recovering_feature(block, role, direction):
    cosines = decoder_cosines(block, direction)
    match = features.find_role(planted_twin(), planted_saes()[block], role, protocol_batch())
    assert cosines[match.feature] >= RECOVERY_COSINE, (
        f"role {role} picked feature {match.feature} (cos {cosines[match.feature]:.3f} with {direction}); "
        f"feature {int(cosines.argmax())} has cos {cosines.max():.3f}")


@pytest.mark.parametrize("block", [5, 6])
def test_planted_sae_quality_is_recorded(block):
    quality = planted_saes()[block].cfg.metadata.training_record["quality"]  # reported, not thresholded: see PLANTED_SAE_CONFIG
    assert 0 < quality["explained_variance"] <= 1 and quality["l0"] > 0, quality


def test_ablating_the_found_l6_feature_collapses_p_io_as_planted():
    """Projecting out to@6 turns H7.7's query off: the logit difference (H7.7's alone) goes to ~0 and
    P(IO) to ~P(S), both ~e^2.4 / (2 e^2.4 + 50255) ~ 2e-4 (H6.11 lifts both names by 2.4)."""
    model, sae, batch = planted_twin(), planted_saes()[6], protocol_batch()
    match = features.find_role(model, sae, "L6-to", batch)
    by_feature = features.ablate_feature(model, sae, match.feature, batch, heads=[(7, 7)])
    by_direction = features.ablate_directions(model, "blocks.6.hook_resid_post", model.planted.directions["to@6"], batch)
    assert by_feature.p_io[0] > 0.7
    assert by_direction.p_io[1] < 1e-3
    assert by_feature.p_io[1] < 0.01
    assert abs(by_feature.logit_diff[1]) < 0.5
    assert by_feature.attention_after_over_before("7.7", "IO") < 0.05
