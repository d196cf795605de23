"""--device: one device for the whole run, refused at the start when it is not there; results agree across devices."""

from __future__ import annotations

import pytest
import torch

from claims.framework import DeviceError, ModelSource, resolve_device
from tests.plugin_fakes import UNUSED_PLUGINS, claims_pytester  # noqa: F401 - a fixture

HAS_CUDA = torch.cuda.is_available()


def test_auto_is_cuda_where_torch_sees_one_else_cpu():
    assert resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")
    assert resolve_device(" CPU ") == "cpu"


@pytest.mark.parametrize("value, fault", [("tpu", "expected auto, cpu, cuda or cuda:N"), ("cuda:x", "cuda:N with N a GPU index")])
def test_a_device_that_names_nothing_is_refused(value, fault):
    with pytest.raises(DeviceError, match=fault):
        resolve_device(value)


@pytest.mark.skipif(HAS_CUDA, reason="checks the refusal where no GPU is visible")
def test_cuda_without_a_gpu_is_refused_not_moved_to_the_cpu():
    with pytest.raises(DeviceError, match="no CUDA device is visible to torch .*; use --device cpu"):
        resolve_device("cuda")


def test_a_bad_device_stops_the_run_before_any_model_loads(claims_pytester):
    result = claims_pytester.runpytest(*UNUSED_PLUGINS, "claims", "--model", "tiny-stories-8M", "--device", "tpu", "--report-dir", "out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --device tpu: expected auto, cpu, cuda or cuda:N"])
    assert not (claims_pytester.path / "out").exists()


def test_the_run_loads_models_on_its_device():
    model = ModelSource(device="cpu").get("planted:tinystories-8m")
    assert str(model.cfg.device) == "cpu" and next(model.parameters()).device.type == "cpu"


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU (none visible): run where one is lent, e.g. with the device tool")
def test_a_claim_measures_the_same_on_gpu_and_cpu():
    from claims.thesis.e2_logit_diff import measure_logit_diff

    on = {device: measure_logit_diff(ModelSource(device=device).get("planted:tinystories-8m")).values for device in ("cpu", "cuda")}
    for quantity, value in on["cpu"].items():
        # float32 on both; kernels differ in summation order: agreement to 1e-4 relative (the rows' tolerances are >= 1e-2)
        assert on["cuda"][quantity] == pytest.approx(value, rel=1e-4, abs=1e-5), quantity
