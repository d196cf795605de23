"""The circuit card (thesis ch. 5, "explore larger models in the TinyStories family"): the IOI
circuit of every selected model, found by role (mechinterp.circuit_card), measured and shown with
no threshold. It runs on every model, so a TinyStories version the thesis makes no claim about
(28M, 33M) or an unidentified checkpoint still gets a measured answer, never an empty run.
With `--ioi-templates FILE` (claims.options) the card reads IOI on the model's own templates.
On a model learned here (fixtures/learned) the card's roles are shown beside the brute-force answer
(every head mean-ablated, fixtures.learned.ground_truth), the ground truth the card is tested against.
"""

from __future__ import annotations

from claims.claim import Claim
from claims.framework import Measured, tokenizer_for
from mechinterp.circuit_card import circuit_card
from mechinterp.ioi_roles import RoleFloors


def brute_force_rows(model, recipe) -> dict[str, str]:
    """The learned model's brute-force roles and top heads (on its recipe's own prompts), as card rows."""
    from fixtures.learned.ground_truth import head_effects, recipe_prompts

    truth = head_effects(model, recipe_prompts(recipe))
    listed = lambda heads: ", ".join(f"H{l}.{h} (drop {truth.drop[l, h]:+.2f})" for l, h in heads[:3]) or "none"  # noqa: E731
    if truth.clean_logit_diff < RoleFloors().min_logit_diff:
        listed = lambda heads: "- (no IOI behaviour)"  # noqa: E731
    top = truth.drop.abs().flatten().argsort(descending=True)[:3]
    n = truth.drop.shape[1]
    return {"brute force: logit diff (its own templates, held-out pairs)": f"{truth.clean_logit_diff:.2f}",
            "brute force: name movers (ablation drop)": listed(truth.name_movers),
            "brute force: negative name movers (ablation drop)": listed(truth.negative_name_movers),
            "brute force: S-inhibition (ablation drop)": listed(truth.s_inhibition),
            "brute force: S-suppression (ablation drop)": listed(truth.s_suppression),
            "brute force: top heads (ablation drop)": listed([(int(i) // n, int(i) % n) for i in top])}


def measure_circuit_card(model, recipe=None, templates: list[str] | None = None,
                         templates_source: str | None = None) -> Measured:
    """The card's values and rows; with a learned model's recipe, the brute-force rows beside them."""
    card = circuit_card(model, tokenizer_for(model), templates=templates, templates_source=templates_source)
    return Measured(card.values(), details={"card": {**card.table(), **(brute_force_rows(model, recipe) if recipe else {})}})


def learned_recipe(subject):
    """The recipe of a learned checkpoint (fixtures.learned), or None for any other model."""
    from fixtures.learned import RECIPES, recipe_of

    name = recipe_of(subject.spec.name) if subject.spec.kind == "local" else None
    return RECIPES[name] if name else None


def run_ioi_templates(subject) -> tuple[list[str] | None, str | None]:
    """(templates, file) of the run's --ioi-templates, or (None, None)."""
    return subject.options.ioi_templates, subject.options.ioi_templates_file


def measure_card(model, recipe, templates: tuple[list[str] | None, str | None]) -> Measured:
    return measure_circuit_card(model, recipe, templates=templates[0], templates_source=templates[1])


CIRCUIT_CARD = Claim(
    'circuit-card', 's3.4-3.5',
    'The IOI circuit of each model by role: name movers, S-inhibition, duplicate, previous-token and induction heads (measured, no threshold).',
    measure=measure_card,
    inputs=(learned_recipe, run_ioi_templates),
    measured_only=True,
)

CLAIMS = [CIRCUIT_CARD]
