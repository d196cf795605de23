"""mechinterp/models.py: names, counterparts, weights on disk, clear errors, local checkpoints and
planted dispatch. Real weights are never needed: absent models use an empty offline HF cache,
present ones the architecture twins."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens import loading_from_pretrained as loading

from fixtures.tokenizer import gpt2_tokenizer, gpt2_tokenizer_dir
from fixtures.twins import hub_cache, twin_cache, twin_hf_model
from mechinterp import models
from mechinterp.ioi import make_batch, protocol_prompts
from mechinterp.models import (
    KNOWN_MODELS,
    UnknownModel,
    WeightsUnavailable,
    load,
    missing_weights_message,
    real_counterpart,
    weights_available,
)

# Same reason as tests/test_twins.py: float32 rounding through 8 layers is ~1e-5; bugs are O(0.1).
LOGIT_ATOL = 1e-4


# --- names ---------------------------------------------------------------------------------------


def test_known_models_are_transformer_lens_official_names():
    for name, repo in KNOWN_MODELS.items():
        assert repo in loading.OFFICIAL_MODEL_NAMES, repo
        assert loading.get_official_model_name(name) == repo, name


@pytest.mark.parametrize(
    "spec, counterpart",
    [
        ("planted:tinystories-8m", "tiny-stories-8M"),
        ("planted:tinystories-8m/no-s-inhibition", "tiny-stories-8M"),
        ("planted:gpt2-small", "gpt2-small"),
        ("planted:gpt2-small/late-name-movers", "gpt2-small"),
        ("tiny-stories-8M", "tiny-stories-8M"),
        ("roneneldan/TinyStories-8M", "tiny-stories-8M"),
        ("gpt2-small", "gpt2-small"),
        ("gpt2", "gpt2-small"),
        ("tiny-stories-33M", "tiny-stories-33M"),
    ],
)
def test_real_counterpart(spec, counterpart):
    assert real_counterpart(spec) == counterpart


def test_unknown_names_raise_an_error_listing_the_known_ones():
    with pytest.raises(UnknownModel) as err:
        real_counterpart("tiny-stories-9M")
    assert all(name in str(err.value) for name in KNOWN_MODELS)
    with pytest.raises(UnknownModel, match="unknown planted twin 'llama'.*planted:tinystories-8m, planted:gpt2-small"):
        real_counterpart("planted:llama")
    with pytest.raises(UnknownModel) as err:
        load("tiny-stories-9M")
    assert all(name in str(err.value) for name in KNOWN_MODELS)
    assert "planted:" in str(err.value) and "directory" in str(err.value)
    with pytest.raises(UnknownModel):
        weights_available("tiny-stories-9M")


# --- absent weights: a one-line error, without touching the hub ----------------------------------


@pytest.fixture
def hub_forbidden(monkeypatch):
    """Fail the test if loading reaches from_pretrained: the error must come before any hub call
    (huggingface_hub retries an unreachable host for ~25 s per file)."""

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained was called although the weights are known to be unavailable")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", refuse)


@pytest.mark.parametrize("name", list(KNOWN_MODELS))
def test_missing_weights_message_is_one_line_saying_how_to_provide_them(name):
    message = missing_weights_message(name)
    assert "\n" not in message
    assert f"load('{name}')" in message and KNOWN_MODELS[name] in message
    assert "HF_HOME" in message and "--model" in message


def test_absent_model_offline_raises_weights_unavailable(hub_forbidden):
    with twin_cache(()):
        assert not weights_available("tiny-stories-8M")
        with pytest.raises(WeightsUnavailable) as err:
            load("tiny-stories-8M")
        assert str(err.value) == missing_weights_message("tiny-stories-8M")  # names this (empty) cache
    assert "\n" not in str(err.value) and err.value.spec == "tiny-stories-8M"


def test_absent_model_online_but_hub_unreachable_raises_weights_unavailable(hub_forbidden, monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused at once
    (tmp_path / "hub").mkdir()
    with hub_cache(tmp_path / "hub", offline=False):
        assert not models.hub_reachable()
        with pytest.raises(WeightsUnavailable, match="gpt2-small: weights of gpt2 are not in the HF cache"):
            load("gpt2-small")


@pytest.fixture
def hub_answering_503(monkeypatch):
    """A local 'hub' answering every request 503, counting them; the endpoint points at it."""
    import http.server
    import threading

    from huggingface_hub import constants

    requests = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def answer(self):
            requests.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET = answer

        def log_message(self, *args):  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    yield endpoint, requests
    server.shutdown()
    server.server_close()


def test_a_hub_server_error_is_one_request_and_a_line_naming_the_status_and_url(hub_forbidden, hub_answering_503, tmp_path):
    # huggingface_hub retried a 503 for ~20 s per model, and the skip line then said "run once online"
    endpoint, requests = hub_answering_503
    (tmp_path / "hub").mkdir()
    with hub_cache(tmp_path / "hub", offline=False):
        with pytest.raises(WeightsUnavailable) as err:
            load("gpt2-small")
    assert requests == ["/gpt2/resolve/main/config.json"]  # one try, no retry storm
    message = str(err.value)
    assert "\n" not in message and "run once online" not in message
    assert f"the hub cannot serve them now ({endpoint}/gpt2/resolve/main/config.json answered 503 Service Unavailable)" in message
    assert message.startswith("gpt2-small: weights of gpt2 are not in the HF cache") and "try again later" in message


def test_a_server_error_past_the_probe_is_named_too(monkeypatch, tmp_path):
    # the probed config.json answered, a later file did not: the line names that answer, not "run once online"
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    url = "https://hub.example/gpt2/resolve/main/model.safetensors"

    def weights_fail(*args, **kwargs):
        answer = httpx.Response(502, request=httpx.Request("GET", url))
        raise OSError("couldn't connect") from HfHubHTTPError("502 Bad Gateway", response=answer)

    monkeypatch.setattr(models, "hub_probe", lambda *args, **kwargs: (True, ""))
    monkeypatch.setattr(HookedTransformer, "from_pretrained", weights_fail)
    (tmp_path / "hub").mkdir()
    with hub_cache(tmp_path / "hub", offline=False), pytest.raises(WeightsUnavailable) as err:
        load("gpt2-small")
    assert f"the hub cannot serve them now ({url} answered 502 Bad Gateway)" in str(err.value)


def test_hub_is_unreachable_in_offline_mode():
    with twin_cache(()):
        assert not models.hub_reachable()


# --- local checkpoint directories ----------------------------------------------------------------


@pytest.mark.parametrize("with_tokenizer", [True, False], ids=["own-tokenizer", "gpt2-fallback"])
def test_local_checkpoint_directory_loads_offline_and_matches_hf(tmp_path, with_tokenizer):
    hf = twin_hf_model("tiny-stories-8M")
    hf.save_pretrained(str(tmp_path))
    if with_tokenizer:
        for item in gpt2_tokenizer_dir().iterdir():
            shutil.copy(item, tmp_path / item.name)
    batch = make_batch(gpt2_tokenizer(), protocol_prompts())
    with twin_cache(()):  # an empty offline hub: the directory alone must suffice
        assert weights_available(str(tmp_path))
        assert real_counterpart(str(tmp_path)) == "tiny-stories-8M"  # identified by its config
        model = load(str(tmp_path))
    assert model.cfg.original_architecture == "GPTNeoForCausalLM" and model.cfg.d_model == 256
    assert model.tokenizer is not None and len(model.tokenizer) == 50257
    assert model.to_tokens("When John and Mary", prepend_bos=False)[0].tolist() == gpt2_tokenizer().encode("When John and Mary")
    with torch.no_grad():
        ours, theirs = model(batch.tokens), hf(batch.tokens).logits
    centered = lambda x: x - x.mean(-1, keepdim=True)  # noqa: E731 - center_unembed's per-position shift
    max_abs = (centered(ours) - centered(theirs)).abs().max().item()
    assert max_abs < LOGIT_ATOL, f"local checkpoint: max |TL - HF| centered logit = {max_abs:.3g}"


def test_local_directory_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UnknownModel, match="no config.json, so not an HF checkpoint"):
        load(str(empty))
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    twin_hf_model("tiny-stories-8M").config.save_pretrained(str(no_weights))  # a valid config, no weights
    assert not weights_available(str(no_weights))
    with pytest.raises(WeightsUnavailable, match="no HF checkpoint"):
        load(str(no_weights))
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    (other / "model.safetensors").write_bytes(b"")
    with pytest.raises(UnknownModel, match="LlamaForCausalLM.*not one of GPTNeoForCausalLM, GPT2LMHeadModel"):
        load(str(other))


def test_a_checkpoint_pickling_more_than_tensors_is_refused_in_one_line_without_torchs_advice(tmp_path):
    # the refusal repeated torch's advice to load with weights_only=False, which would run the file's code
    import fractions

    hf = twin_hf_model("tiny-stories-8M")
    hf.config.save_pretrained(str(tmp_path))
    torch.save({**hf.state_dict(), "extra": fractions.Fraction(1, 3)}, tmp_path / "pytorch_model.bin")
    with twin_cache(()), pytest.raises(models.CheckpointError) as err:
        load(str(tmp_path))
    message = str(err.value)
    assert "\n" not in message and "\x1b" not in message and "weights_only" not in message and "trust" not in message
    assert message == (f"{tmp_path}: weights (pytorch_model.bin) hold pickled objects other than tensors (Unsupported global: "
                       "GLOBAL fractions.Fraction), which are not loaded: unpickling them could run code from the file; use a "
                       "checkpoint of tensors only (e.g. model.safetensors)")


# --- planted specs dispatch to fixtures.planted --------------------------------------------------


def test_planted_spec_builds_with_the_registered_builder(monkeypatch):
    """mechinterp imports nothing from fixtures: planted specs build with what fixtures.planted registered."""
    from mechinterp import model_specs

    built = []

    def build(name):
        built.append(name)
        cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=10, act_fn="relu")
        return HookedTransformer(cfg)

    monkeypatch.setattr(model_specs, "_PLANTED_SOURCE", [])
    model_specs.register_planted(lambda: {"tinystories-8m/no-s-inhibition"}, build)
    try:
        assert weights_available("planted:tinystories-8m/no-s-inhibition")
        model = load("planted:tinystories-8m/no-s-inhibition", dtype=torch.float64)
    finally:
        model_specs._parse_text.cache_clear()
    assert built == ["tinystories-8m/no-s-inhibition"]
    assert model.W_E.dtype == torch.float64 and not model.training


def test_planted_spec_without_a_registered_builder_is_a_clear_error(monkeypatch):
    from mechinterp import model_specs

    monkeypatch.setattr(model_specs, "_PLANTED_SOURCE", [])
    model_specs._parse_text.cache_clear()
    try:
        with pytest.raises(UnknownModel, match="planted models are not registered: import fixtures.planted first"):
            load("planted:tinystories-8m/no-s-inhibition")
    finally:
        model_specs._parse_text.cache_clear()
