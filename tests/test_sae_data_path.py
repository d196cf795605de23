"""The real model's SAE data path, rehearsed offline: a small stand-in of roneneldan/TinyStories in a
throwaway HF datasets cache, read by the same `datasets.load_dataset(..., streaming=True)` call a real
run makes (mechinterp.sae_training._dataset, claims.sae_sources.context_corpus), training a small gated
SAE end to end on a random-init twin of tiny-stories-8M loaded by name from an offline hub cache.

The stand-in is laid out as an online run leaves the cache: parquet files prepared by the datasets
Parquet builder, under the repo's name (roneneldan___tiny_stories/default/0.0.0/<hash>). Offline,
load_dataset falls back to that cache, exactly as on a machine that fetched TinyStories once.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from claims.sae_sources import THESIS, THESIS_SAE_SOURCES, read_sae_config
from mechinterp.sae_config import SAETrainingConfig

REPO = "roneneldan/TinyStories"
STANDIN_COMMIT = "0" * 40  # where a real download puts the hub commit


def write_tinystories_standin(cache_dir, train: list[str], validation: list[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for split, texts in (("train", train), ("validation", validation)):
        path = cache_dir / "downloads" / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": texts}), path)
        files[split] = [str(path)]
    # Prepared from local files, then moved where a hub download puts it (<namespace>___<name>/<config>/<version>/
    # <commit>): the builder takes a repo_id only for files inside the hub repo, and names local data by its hash
    staging = cache_dir / "staging"
    builder = Parquet(cache_dir=str(staging), dataset_name="tiny_stories", config_name="default", data_files=files)
    builder.download_and_prepare()
    target = cache_dir / "roneneldan___tiny_stories" / "default" / "0.0.0" / STANDIN_COMMIT
    target.parent.mkdir(parents=True)
    Path(builder.cache_dir).rename(target)
    shutil.rmtree(staging)


@pytest.fixture
def offline_tinystories(tmp_path, monkeypatch):
    """(train, validation) texts of the stand-in, in an offline datasets cache that holds nothing else."""
    import datasets
    from huggingface_hub import constants

    from fixtures.corpus import story_corpus

    stories = story_corpus(260, seed=3)
    train, validation = stories[:200], stories[200:]
    cache = tmp_path / "hf-datasets"
    write_tinystories_standin(cache, train, validation)
    # datasets and huggingface_hub read these once, at import: set the constants they consult per call
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    return train, validation


def test_thesis_preset_states_where_every_setting_comes_from():
    config = read_sae_config(THESIS, planted=False)
    assert set(THESIS_SAE_SOURCES) == set(config.to_dict()), "a setting of the thesis preset has no stated source"
    assert (config.width, config.dataset_path, config.hook_point) == (4096, REPO, "hook_resid_post")
    assert config.d_sae(256) == 16 * 256
    # planted models accept it too (trained on their story corpus)
    assert read_sae_config(THESIS, planted=True) == config


def test_tinystories_standin_trains_an_sae_through_the_real_data_path(offline_tinystories, tmp_path):
    from claims.sae_sources import context_corpus
    from fixtures.twins import twin_cache
    from mechinterp.models import load
    from mechinterp.sae_training import _dataset, train_sae

    train, validation = offline_tinystories
    streamed = [row["text"] for _, row in zip(range(3), _dataset(None, REPO, "train"))]
    assert streamed == train[:3], "load_dataset did not read the stand-in"
    assert context_corpus("tiny-stories-8M")[:2] == validation[:2]

    # The thesis preset scaled down to seconds; dataset_path, hook and gated architecture are the real run's.
    small = replace(read_sae_config(THESIS, planted=False), block=6, width=512, device="cpu", training_tokens=4096,
                    train_batch_size_tokens=256, context_size=64, store_batch_size_prompts=4, n_batches_in_buffer=4,
                    n_batches_for_norm_estimate=2, n_eval_batches=1)
    assert isinstance(small, SAETrainingConfig)
    with twin_cache(["tiny-stories-8M"]):
        model = load("tiny-stories-8M")
        sae = train_sae(model, None, small, cache_dir=tmp_path / "saes")
    record = sae.cfg.metadata.training_record
    assert record["corpus"] == {"source": "huggingface", "dataset_path": REPO}
    assert sae.cfg.d_sae == 512 and sae.cfg.metadata.hook_name == "blocks.6.hook_resid_post"
    assert record["train_seconds"] > 0 and record["tokens_per_second"] > 0
    quality = record["quality"]
    assert 0 < quality["l0"] <= 512 and quality["ce_loss_clean"] > 0, quality
