"""The one threshold table: every claim's pass/fail rule, with the thesis value and the reason.

A row says: on `model`, the measured `quantity` of `claim` must satisfy `op threshold`
(for 'within': |value - threshold| <= tolerance). `why` states the thesis value, the tolerance
and the reason, with the thesis section.

Which models a row applies to (`Threshold.model`):
- an exact transformer_lens name (`tiny-stories-8M`, `gpt2-small`): that model only. Numbers and
  named heads (H7.7, ...) are properties of one checkpoint, so most rows are exact.
- a glob, e.g. `tiny-stories-*`: family-wide, for a claim the thesis argues from the training data
  or architecture of the whole TinyStories family rather than from one checkpoint. It applies to
  1M, 3M, 8M, 28M and 33M alike; say in `why` why the claim should carry over.
A planted model or mutant uses the rows of its real counterpart (`models.real_counterpart`). A
selected model with no row for a claim is not silently passed: its test is reported as skipped,
with a reason saying the thesis made no such claim for it.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from fnmatch import fnmatchcase

from mechinterp.models import real_counterpart

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


# E2.logit-diff, shared reason for both 'within' rows: the prompt set is the thesis's
# (mechinterp.ioi.protocol_prompts, BOS prepended as transformer_lens does by default, which is how
# GPT-2 small's public 3.55 was obtained). The thesis prints one decimal, so its true value lies
# within ±0.05; transformer_lens's weight processing (fold_ln, centring) leaves logit differences
# unchanged up to float32 error (~1e-4), and library/hardware differences add well under 0.05.
# Tolerance 0.15 = 0.05 rounding + 0.10 for those unreported details, far below the 5.8 gap between models.
_LOGIT_DIFF_SETUP = (
    "Thesis s3.4, 8-prompt protocol set; tolerance 0.15 = ±0.05 one-decimal rounding + 0.10 for library/hardware details."
)

THRESHOLDS: list[Threshold] = [
    # --- E1 ---
    # --- E2 ---
    Threshold("E2.logit-diff", "tiny-stories-8M", "logit_diff", 9.4, "within", 9.4, 0.15,
              f"TinyStories-8M's mean logit diff is 9.4. {_LOGIT_DIFF_SETUP}"),
    Threshold("E2.logit-diff", "gpt2-small", "logit_diff", 3.6, "within", 3.6, 0.15,
              f"GPT-2 small's mean logit diff is 3.6 (public reference 3.55, inside the band). {_LOGIT_DIFF_SETUP}"),
    # The ordering TS-8M > GPT-2 small, per model against the other model's thesis value, so it needs
    # no cross-model run: each model is checked alone, and the two rows together imply the ordering.
    Threshold("E2.logit-diff", "tiny-stories-8M", "logit_diff", 9.4, ">", 3.6, None,
              "Ordering TS-8M > GPT-2 small (thesis s3.4): TS-8M must beat GPT-2 small's thesis value 3.6."),
    Threshold("E2.logit-diff", "gpt2-small", "logit_diff", 3.6, "<", 9.4, None,
              "Ordering TS-8M > GPT-2 small (thesis s3.4): GPT-2 small must stay below TS-8M's thesis value 9.4."),
    # --- E3 ---
]


def lookup_all(claim: str, spec: str) -> list[Threshold]:
    """Every row of `claim` that applies to `spec` (a planted spec uses its real counterpart's rows)."""
    real = real_counterpart(spec)
    return [row for row in THRESHOLDS if row.claim == claim and row.applies_to(real)]

