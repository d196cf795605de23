"""Threshold rows and known gaps: the types every paper's table is made of, and their lookups.

Each paper declares its own table (claims/thesis/thresholds.py); the lookups here read every registered
paper's (claims.claim). A row says: on `model`, the measured `quantity` of `claim` must satisfy `op threshold`
(for 'within': |value - threshold| <= tolerance). `why` states the thesis value, the tolerance
and the reason, with the thesis section.

Which models a row applies to (`Threshold.model`):
- an exact transformer_lens name (`tiny-stories-8M`, `gpt2-small`): that model only. Numbers and
  named heads (H7.7, ...) are properties of one checkpoint, so most rows are exact.
- a glob, e.g. `tiny-stories-*`: family-wide, for a claim the thesis argues from the training data
  or architecture of the whole TinyStories family rather than from one checkpoint. It applies to
  1M, 3M, 8M, 28M and 33M alike; say in `why` why the claim should carry over.
A planted model or mutant uses the rows of its real counterpart, a local directory those of the
checkpoint its config identifies (`ModelSpec.rows_model`); an unidentified local checkpoint matches
family globs only (`ModelSpec.row_key`). A selected model with no row for a claim is not silently
passed: its test is reported as skipped, with a reason saying the thesis made no such claim for it.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from mechinterp.model_specs import ModelSpec, parse_spec

_COMPARE = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
OPS = (*_COMPARE, "within")


@dataclass(frozen=True)
class Threshold:
    claim: str  # e.g. "E2.logit-diff"
    model: str  # exact transformer_lens name, or a glob such as "tiny-stories-*" (family-wide)
    quantity: str  # key of Measured.values
    thesis_value: float | None  # the thesis's number, None where the thesis is qualitative
    op: str  # one of OPS
    threshold: float  # the bound, or the centre for 'within'
    tolerance: float | None  # half-width for 'within'; for a one-sided op, how far the bound sits from the thesis value (informational)
    why: str  # thesis value, tolerance and reason, with the thesis section

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"{self.claim}/{self.quantity}: op {self.op!r} is not one of {OPS}")
        if self.op == "within" and (self.tolerance is None or not self.tolerance >= 0):
            raise ValueError(f"{self.claim}/{self.quantity}: 'within' needs a tolerance >= 0, got {self.tolerance!r}")
        if not self.why.strip():
            raise ValueError(f"{self.claim}/{self.quantity}: every threshold needs a 'why'")

    @property
    def family_wide(self) -> bool:
        return any(c in self.model for c in "*?[")

    def applies_to(self, real_model: str) -> bool:
        return fnmatchcase(real_model, self.model)

    def passes(self, value: float) -> bool:
        """Whether `value` satisfies the row; NaN never does."""
        value = float(value)
        if math.isnan(value):
            return False
        if self.op == "within":
            # inclusive band; the 1e-12 slack absorbs binary rounding of decimal ends (9.4 - 9.25 > 0.15 in floats)
            return abs(value - self.threshold) <= self.tolerance + 1e-12 * max(1.0, abs(self.threshold))
        return _COMPARE[self.op](value, self.threshold)

    def describe(self) -> str:
        """The rule in words, e.g. 'logit_diff within 9.4 ± 0.15'."""
        if self.op == "within":
            return f"{self.quantity} within {self.threshold:g} ± {self.tolerance:g}"
        return f"{self.quantity} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class KnownGap:
    """A planted model that cannot show a finding: the claim still runs there, and its failure is an
    expected one (report: "known gap"), strictly: once it passes, the test fails until the entry goes.
    Keyed by claim and the exact --model value; `why` is the measured cause, from a run."""

    claim: str
    model: str  # exact --model value, e.g. "planted:tinystories-8m" (mutants are not covered)
    quantities: tuple[str, ...]  # the rows the model may fail; a row failing beyond them fails the test
    why: str
    unless_options: tuple[str, ...] = ()  # pytest options (dest names) under which it was not measured
    # Its rows were measured passing on some SAE seed or machine and failing on others: not strict (a pass is
    # reported as a pass, noted as seed-dependent, not as the gap having closed).
    seed_dependent: bool = False

    def __post_init__(self):
        if not self.quantities or not self.why.strip():
            raise ValueError(f"known gap {self.claim} on {self.model}: name the failing rows and the measured cause")


# A finding measured over several SAE seeds (--sae-seeds) holds only when it holds on every seed. The thesis
# trained one SAE per block, so its findings are claims about that SAE; a finding that some seeds show and
# others do not depends on SAE training, and a majority would hide the seed that flips it. The report shows
# each seed's value and how many seeds pass.
SAE_SEED_RULE = "every seed"


def known_gap(claim: str, model: str) -> KnownGap | None:
    """The known gap of `claim` on the --model value `model`, if its paper lists one."""
    from claims.claim import all_known_gaps

    found = [gap for gap in all_known_gaps() if gap.claim == claim and gap.model == model]
    return found[0] if found else None


def lookup_all(claim: str, spec: str | ModelSpec) -> list[Threshold]:
    """Every row of `claim` that applies to the model `spec` names (a planted spec uses its real
    counterpart's rows, a local directory those of the checkpoint its config identifies)."""
    from claims.claim import all_rows

    key = parse_spec(spec).row_key
    return [row for row in all_rows() if row.claim == claim and row.applies_to(key)]

