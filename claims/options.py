"""A run's options, read and checked once when the run starts (`RunOptions.from_config`).

Every command-line option and environment variable of the claims suite is read here and nowhere else;
each bad value is one line (pytest.UsageError) before any model loads. The framework, the fixtures and
the claims read the parsed `RunOptions` (config.stash[RUN_OPTIONS], and `Subject.options`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mechinterp.model_specs import ModelSpec, UnknownModel, parse_spec

DISTRIBUTION_PROMPTS_ENV = "MECHINTERP_DISTRIBUTION_PROMPTS"
# E1's "TinyStories vocabulary" information row: a text file of real stories (else the synthetic corpus's tokens)
TINYSTORIES_TEXT_ENV = "MECHINTERP_TINYSTORIES_TEXT"


@dataclass(frozen=True)
class RunOptions:
    """What the user asked this run to do, parsed and checked."""

    models: tuple[ModelSpec, ...]  # --model (default: the selected papers' default models)
    models_given: bool = False  # whether --model was given (the defaults no selected claim runs on are left out)
    papers: tuple[str, ...] = ("thesis",)  # --paper
    device: str = "cpu"  # --device, resolved (auto -> cuda when visible)
    report_dir: Path | None = None  # --report-dir, or the default run directory (checked writable)
    report_dir_given: bool = False
    baseline: dict | None = None  # --baseline, loaded and checked
    baseline_label: str = ""  # --baseline as typed
    compare_all: bool = False
    live: str = "auto"
    allow_unchecked_models: bool = False
    sae_dir: str | None = None
    sae_config: str | None = None
    sae_seeds: tuple[int, ...] | None = None
    distribution_prompts: int | None = None  # --distribution-prompts, else $MECHINTERP_DISTRIBUTION_PROMPTS
    ioi_templates: list[str] | None = None  # --ioi-templates, read and checked
    ioi_templates_file: str | None = None
    tinystories_text: str | None = None  # $MECHINTERP_TINYSTORIES_TEXT

    def distribution_prompt_count(self, model) -> int:
        """Prompts of a claim's distribution pass on `model`: the option, else the model's default
        (mechinterp.robustness.default_prompt_count); 0 turns the pass off."""
        from mechinterp.robustness import default_prompt_count

        return default_prompt_count(model) if self.distribution_prompts is None else self.distribution_prompts

    def is_set(self, name: str) -> bool:
        """Whether the option `name` (a field, e.g. 'sae_config') was given."""
        return getattr(self, name) is not None

    @classmethod
    def from_config(cls, config) -> "RunOptions":
        """Parse and check every option of `config` (a pytest Config); one pytest.UsageError line if any is bad."""
        from claims import framework
        from claims.claim import UnknownPaper, paper
        from mechinterp import report, results

        option = config.getoption
        papers = tuple(dict.fromkeys(p.strip() for value in (option("paper") or ["thesis"]) for p in value.split(",") if p.strip()))
        try:
            defaults = [model for name in papers for model in paper(name).default_models]
        except UnknownPaper as err:
            raise pytest.UsageError(str(err)) from None
        models = selected_models(option("model"), tuple(dict.fromkeys(defaults)))
        try:
            device = framework.resolve_device(option("device"))
        except framework.DeviceError as err:
            raise pytest.UsageError(str(err)) from None
        try:
            report_dir = report.check_report_dir(option("report_dir") or framework.default_report_dir(config.rootpath))
        except report.ReportDirError as err:
            raise pytest.UsageError(f"--report-dir: {err}") from None
        sae_config, sae_dir, sae_seeds = option("sae_config"), option("sae_dir"), option("sae_seeds")
        seeds = None
        if sae_config is not None or sae_dir is not None or sae_seeds is not None:  # checked even when no E3 test is selected
            from claims.sae_sources import check_sae_options, parse_sae_seeds
            from mechinterp.sae_options import SAEOptionError

            try:
                check_sae_options(sae_config, sae_dir, [spec.raw for spec in models], sae_seeds)
                seeds = parse_sae_seeds(sae_seeds)
            except SAEOptionError as err:
                raise pytest.UsageError(str(err)) from None
        baseline = None
        if option("baseline") is not None:
            try:
                baseline = results.check_baseline(option("baseline"), report_dir)
            except results.ResultsFileError as err:
                raise pytest.UsageError(f"--baseline {option('baseline')}: {err}") from None
        return cls(
            models=tuple(models), models_given=option("model") is not None, papers=papers, device=device,
            report_dir=report_dir, report_dir_given=option("report_dir") is not None, baseline=baseline,
            baseline_label=option("baseline") or "", compare_all=option("compare_all"), live=option("live"),
            allow_unchecked_models=option("allow_unchecked_models"), sae_dir=sae_dir, sae_config=sae_config,
            sae_seeds=seeds, distribution_prompts=_distribution_prompts(option("distribution_prompts")),
            **_ioi_templates(option("ioi_templates")),
            tinystories_text=os.environ.get(TINYSTORIES_TEXT_ENV) or None,
        )


def selected_models(option_values: list[str] | None, defaults: tuple[str, ...]) -> list[ModelSpec]:
    """--model values (repeatable, comma separated), parsed, in order, without duplicates; `defaults` if none.
    A value that names nothing is a usage error here, before any model loads."""
    texts = list(defaults) if not option_values else [s.strip() for value in option_values for s in value.split(",")]
    texts = list(dict.fromkeys(s for s in texts if s))
    if not texts:
        raise pytest.UsageError(f"--model was given but names no model: {option_values!r}")
    try:
        return [parse_spec(text) for text in texts]
    except UnknownModel as unknown:
        raise pytest.UsageError(f"--model: {unknown}") from None


def _distribution_prompts(given: int | None) -> int | None:
    for name, value in (("--distribution-prompts", given), (f"${DISTRIBUTION_PROMPTS_ENV}", os.environ.get(DISTRIBUTION_PROMPTS_ENV) or None)):
        if value is None:
            continue
        if not str(value).strip().isdigit():
            raise pytest.UsageError(f"{name} must be a whole number >= 0 (0 turns the robustness pass off), got {value!r}")
        return int(str(value).strip())
    return None


def _ioi_templates(path: str | None) -> dict[str, Any]:
    """--ioi-templates FILE: the circuit card reads IOI on these templates (mechinterp.ioi.read_templates checks them)."""
    if path is None:
        return {"ioi_templates": None, "ioi_templates_file": None}
    from mechinterp.ioi import IOIDataError, read_templates

    try:
        return {"ioi_templates": read_templates(path), "ioi_templates_file": path}
    except IOIDataError as err:
        raise pytest.UsageError(f"--ioi-templates: {err}") from None


RUN_OPTIONS = pytest.StashKey[RunOptions]()


def run_options(config) -> RunOptions:
    """The run's options (parsed in pytest_configure)."""
    return config.stash[RUN_OPTIONS]
