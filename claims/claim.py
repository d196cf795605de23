"""A claim is one declaration; a paper is one folder of them.

    LOGIT_DIFF = Claim("E2.logit-diff", "s3.4", "Mean logit difference IO - S: 9.4 in TinyStories-8M, ...",
                       measure=measure_logit_diff, distribution=lambda model: DISTRIBUTION)

A claim module (claims/thesis/e2_logit_diff.py) holds the measure and ends with `CLAIMS = [...]`; its
paper's thresholds.py holds the claim's rows, the planted models each row fails on, and its known gaps;
the paper's __init__.py gathers them into a `Paper` and registers it. The framework (subjects, the
checks, the record), the claim-pair tests, the benchmarks and the report's statements all go through the
registry here, so adding a claim is one declaration plus its rows. A pytest file beside the module only
turns its declarations into tests (`claim_tests`).

Papers: every package under claims/ that defines PAPER is found by `papers()`; a run checks the papers
`--paper` names (default: the thesis). Another package may register a paper from elsewhere (`register`).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

DEFAULT_PAPER = "thesis"


@dataclass(frozen=True)
class Claim:
    """One finding of a paper and how it is measured."""

    id: str  # e.g. "E2.logit-diff": the marker, the rows' key, the report's heading
    where: str  # where the paper shows it, e.g. "s3.4, figs 3.7-3.8"
    statement: str  # the finding in one sentence (the report's overview)
    # measure(model, *inputs) -> Measured: the paper's protocol on one model. With `over_sae_seeds`, measure(model,
    # saes, *inputs) runs once per --sae-seeds SAESet (claims.sae_sources.over_seeds); each input is
    # input(subject) -> value (a corpus, the run's --ioi-templates, ...)
    measure: Callable[..., Any]
    inputs: tuple[Callable[[Any], Any], ...] = ()
    over_sae_seeds: bool = False
    # model -> the claim's ClaimDistribution (mechinterp.robustness): the same quantities over IOI prompts
    distribution: Callable[[Any], Any] | None = None
    # (measured, subject, RobustnessConfig) -> measured: a distribution pass of the claim's own (E1: random tokens)
    robustness: Callable[[Any, Any, Any], Any] | None = None
    measured_only: bool = False  # no threshold rows: measured and shown on every model (the circuit card)
    test_name: str = ""  # the pytest function; default test_<id after the dot, as an identifier>

    def __post_init__(self):
        if not re.fullmatch(r"[A-Za-z0-9][\w.\-]*", self.id):
            raise ValueError(f"claim id {self.id!r}: letters, digits, '.', '-' and '_' only")
        if not self.statement.strip() or not self.where.strip():
            raise ValueError(f"claim {self.id}: say what the paper found (statement) and where it shows it (where)")
        if not self.test_name:
            name = re.sub(r"\W+", "_", self.id.split(".", 1)[-1].lower()).strip("_")
            object.__setattr__(self, "test_name", f"test_{name}")


RowKey = tuple[str, str, str, str]  # (claim, model, quantity, op): one threshold row


@dataclass(frozen=True)
class Paper:
    """A paper's claims with their threshold rows (claims.thresholds.Threshold), the planted models each row
    fails on (`row_breakers`, keyed by RowKey) and the planted models that cannot show a finding (`known_gaps`)."""

    name: str  # the --paper value and the folder's name
    title: str
    claims: tuple[Claim, ...]
    thresholds: tuple[Any, ...]
    known_gaps: tuple[Any, ...] = ()
    row_breakers: Mapping[RowKey, tuple[str, ...]] = field(default_factory=dict)
    default_models: tuple[str, ...] = ()  # the models a run checks when --model is not given

    def __post_init__(self):
        ids = [claim.id for claim in self.claims]
        if len(set(ids)) != len(ids):
            raise ValueError(f"paper {self.name}: a claim id is declared twice: {sorted(i for i in ids if ids.count(i) > 1)}")
        for row in self.thresholds:
            if row.claim not in ids:
                raise ValueError(f"paper {self.name}: threshold row of {row.claim}/{row.quantity}, a claim it does not declare")
        for claim in self.claims:
            has_rows = any(row.claim == claim.id for row in self.thresholds)
            if has_rows == claim.measured_only:
                raise ValueError(f"paper {self.name}: {claim.id} " + ("is measured only but has threshold rows" if has_rows
                                                                       else "has no threshold row (declare measured_only=True)"))


_PAPERS: dict[str, Paper] = {}
_CLAIMS: dict[str, tuple[Paper, Claim]] = {}
_DISCOVERED = False


def register(paper: Paper) -> Paper:
    """Add a paper to the registry (its package does so on import); a claim id must be unique across papers."""
    if paper.name in _PAPERS and _PAPERS[paper.name] is not paper:
        raise ValueError(f"a paper named {paper.name!r} is already registered")
    for claim in paper.claims:
        owner = _CLAIMS.get(claim.id)
        if owner is not None and owner[0].name != paper.name:
            raise ValueError(f"claim {claim.id} of paper {paper.name} is already declared by paper {owner[0].name}")
    _PAPERS[paper.name] = paper
    _CLAIMS.update({claim.id: (paper, claim) for claim in paper.claims})
    return paper


def _discover() -> None:
    """Import every package under claims/ (each registers its PAPER)."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    import claims

    for module in pkgutil.iter_modules(claims.__path__):
        if module.ispkg:
            importlib.import_module(f"claims.{module.name}")


def papers() -> dict[str, Paper]:
    _discover()
    return dict(_PAPERS)


class UnknownPaper(ValueError):
    """A --paper value that names no paper (one line, before any model loads)."""


def paper(name: str) -> Paper:
    """A paper by name: a folder under claims/, or an importable package that registers one (`pkg.module`)."""
    known = papers()
    if name in known:
        return known[name]
    if "." in name:
        try:
            module = importlib.import_module(name)
        except ImportError as err:
            raise UnknownPaper(f"--paper {name}: cannot import it ({err})") from None
        found = getattr(module, "PAPER", None)
        if isinstance(found, Paper):
            return register(found)
        raise UnknownPaper(f"--paper {name}: the module defines no PAPER")
    raise UnknownPaper(f"--paper {name}: no such paper; known: {', '.join(sorted(known))}")


def claim(claim_id: str) -> Claim:
    """The declaration of `claim_id`, from whichever registered paper declares it."""
    _discover()
    if claim_id not in _CLAIMS:
        raise KeyError(f"no registered paper declares claim {claim_id!r}")
    return _CLAIMS[claim_id][1]


def paper_of(claim_id: str) -> Paper | None:
    _discover()
    owner = _CLAIMS.get(claim_id)
    return owner[0] if owner else None


def all_rows() -> list:
    return [row for p in papers().values() for row in p.thresholds]


def all_known_gaps() -> list:
    return [gap for p in papers().values() for gap in p.known_gaps]


def claim_tests(claims: list[Claim]) -> dict[str, Callable]:
    """One pytest function per claim, named by `Claim.test_name` and marked with its id: a claims file is
    `globals().update(claim_tests(CLAIMS))`. The test runs the claim on its subject and checks it."""
    tests = {}
    for declared in claims:
        tests[declared.test_name] = _claim_test(declared)
    return tests


def _claim_test(declared: Claim) -> Callable:
    import pytest

    def test(subject, check, run_claim):
        check(run_claim(declared))

    test.__name__ = test.__qualname__ = declared.test_name
    test.__doc__ = f"{declared.id} ({declared.where}): {declared.statement}"
    return pytest.mark.claim(declared.id)(test)
