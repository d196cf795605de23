"""The thesis's threshold table: every claim's pass/fail rows with the thesis value and the reason, the
planted models each row fails on (ROW_BREAKERS), and the planted models that cannot show a finding (KNOWN_GAPS).

The row and gap types, and which models a row applies to: claims/thresholds.py. `why` states the thesis
value, the tolerance and the reason, with the thesis section.
"""

from __future__ import annotations

from claims.claim import RowKey
from claims.thresholds import KnownGap, Threshold

# --- the bars a measure applies before any row (not rows themselves; shown as values where they count) ------
NOTICEABLE_EFFECT = 0.1  # E2.head-patch: a head "matters" when patching it moves >= 10% of the clean-corrupted gap
# A feature whose decoder is this close to another's is a copy of it (SAEs split one direction over several
# features): copies of a role feature are no "random other feature", and attribution leads are summed over
# copies. 0.9 is the same bar as recovering a planted direction.
COPY_COSINE = 0.9
# An attribution (gradient x activation, in logits) under this is float noise, not a sign or a lead (measured: a
# layer-6 SAE whose most negative feature had -2.8e-6 against a runner-up of -3.7e-7 "led" 7.7x). 0.01 is far
# below any attribution the thesis reports (the smallest, L7's runner-up, is 0.07).
ATTRIBUTION_NOISE = 0.01

# E2.logit-diff, shared reason for both 'within' rows: the prompt set is the thesis's
# (mechinterp.ioi.protocol_prompts, BOS prepended as transformer_lens does by default, which is how
# GPT-2 small's public 3.55 was obtained). The thesis prints one decimal, so its true value lies
# within ±0.05; transformer_lens's weight processing (fold_ln, centring) leaves logit differences
# unchanged up to float32 error (~1e-4), and library/hardware differences add well under 0.05.
# Tolerance 0.15 = 0.05 rounding + 0.10 for those unreported details, far below the 5.8 gap between models.
_LOGIT_DIFF_SETUP = (
    "Thesis s3.4, 8-prompt protocol set; tolerance 0.15 = ±0.05 one-decimal rounding + 0.10 for library/hardware details."
)

# E0.smallest-ioi (thesis s3.2): TinyStories-8M is "the smallest one in the family that was able to
# perform the IOI task". The thesis gives no numbers for 1M / 3M. Measured as E2.logit-diff on the 8
# protocol prompts (claims/thesis/e0_family.py). "Not able" and "able" are read against the two models
# the thesis shows doing IOI: TS-8M (9.4) and GPT-2 small (3.6, the weaker of the two).
_NOT_ABLE = ("Thesis s3.2: {model} is not 'able to perform the IOI task' (only 8M and up are). Read as: IO's logit at most "
             "1 above S's on average (IO at most e^1 ~ 2.7x as likely as S), under a third of GPT-2 small's 3.6, the weakest "
             "IOI performer the thesis shows, and a ninth of TS-8M's 9.4.")
_NOT_ABLE_P = ("Thesis s3.2: {model} is not 'able to perform the IOI task'. Read as: P(IO) not above P(S) by a clear margin, "
               "at most 10 points at END (TS-8M: 77% vs ~0).")
E0_ROWS = [
    *[
        row
        for model in ("tiny-stories-1M", "tiny-stories-3M")
        for row in (
            Threshold("E0.smallest-ioi", model, "logit_diff", None, "<=", 1.0, None, _NOT_ABLE.format(model=model)),
            Threshold("E0.smallest-ioi", model, "p_io_minus_p_s", None, "<=", 0.1, None, _NOT_ABLE_P.format(model=model)),
        )
    ],
    Threshold("E0.smallest-ioi", "tiny-stories-8M", "logit_diff", 9.4, ">=", 2.0, 7.4,
              "Thesis s3.2/s3.4: TS-8M performs IOI (logit difference 9.4, E2.logit-diff). Here only 'able' is claimed: at "
              "least twice the 'not able' bound of 1M / 3M, so the two sides cannot meet; E2.logit-diff checks the 9.4."),
    Threshold("E0.smallest-ioi", "tiny-stories-8M", "p_io_minus_p_s", 0.773, ">=", 0.1, 0.673,
              "Thesis s3.4.2: TS-8M's P(IO) is 77.3% on the clean prompt. 'Able' read as P(IO) above P(S) by a clear "
              "margin, the 10-point line 1M / 3M must stay under."),
]

THRESHOLDS: list[Threshold] = [
    *E0_ROWS,
    # --- E1 ---
    # E1 (thesis s3.3, figs 3.1-3.6): attention-pattern scores on 20 repeated random sequences of 50
    # tokens (claims/thesis/e1_head_scores.py). The thesis prints no score values, only heatmaps and
    # words ("far weaker", "approximately all", "no", "weak", "strong"); each bound turns a word into
    # a number and says why. A score is a fraction of attention: chance is ~0.01-0.02 on 50-100 keys.
    Threshold("E1.prev-weaker", "gpt2-small", "H4.11_prev_token_score", 1.0, ">=", 0.9, 0.1,
              "Thesis s3.3/fig 3.2: GPT-2 small's H4.11 puts 'approximately all' attention on the previous token (~1). "
              "Tolerance 0.1: 'approximately all' read as at least 90%. Real weights: near 1 (Wang et al.'s previous-"
              "token head; ARENA's replication)."),
    Threshold("E1.prev-weaker", "tiny-stories-8M", "max_prev_token_score", None, "<=", 0.5, None,
              "Thesis s3.3/fig 3.1: TS-8M's previous-token heads are 'far weaker' than GPT-2 small's (~1, fig 3.2). "
              "'Far weaker' read as at most half of that: no TS-8M head above 0.5. The bound also sits below the GPT-2 row's 0.9, "
              "so the two rows together encode the ordering."),
    Threshold("E1.no-induction", "tiny-stories-8M", "max_induction_score", None, "<", 0.4, None,
              "Thesis s3.3/fig 3.3: TS-8M has no induction heads. No head may reach the induction-head cut-off 0.4 "
              "(40% of attention on the token after the earlier copy; chance ~0.01-0.02), the same cut-off that counts GPT-2's."),
    Threshold("E1.no-induction", "gpt2-small", "n_heads_induction_score_ge_0.4", None, ">=", 2, None,
              "Thesis s3.3/fig 3.4: GPT-2 small has 'many' induction heads (Olsson et al.; 5.5 and 6.9 in Wang et al.). "
              "The thesis gives no count; 'many' read as at least the literature's two named heads at the cut-off 0.4 "
              "(a lower bound: real weights are expected to show 5.5 and 6.9 among more, listed in details)."),
    Threshold("E1.dup-weak", "tiny-stories-8M", "H4.0_dup_margin_over_next_head", None, ">", 0.0, None,
              "Thesis s3.3/fig 3.5: H4.0 is TS-8M's single duplicate-token head, so it must score above every other head."),
    Threshold("E1.dup-weak", "tiny-stories-8M", "H4.0_dup_score", None, "<", 0.4, None,
              "Thesis s3.3/fig 3.5: H4.0 is 'weak', against GPT-2's 'strong' heads. Weak read as under 0.4 on the earlier "
              "copy, the line GPT-2's H0.5 must clear (a head sharing its attention between itself, the copy and the "
              "BOS sink gets ~1/3)."),
    Threshold("E1.dup-weak", "gpt2-small", "H3.0_dup_score", None, ">=", 0.5, None,
              "Thesis s3.3/fig 3.6: GPT-2 small's H3.0 is a 'strong' duplicate-token head: at least half its attention on the "
              "earlier copy (the line TS-8M's H4.0 stays under). Literature heads 0.1, 0.10, 3.0 shown in details."),
    Threshold("E1.dup-weak", "gpt2-small", "H0.5_dup_score", None, ">=", 0.4, None,
              "Thesis s3.3/fig 3.6: GPT-2 small's H0.5 is a 'strong' duplicate-token head (the thesis's finding; Wang et al. "
              "list 0.1, 0.10, 3.0 instead, shown in details). A layer-0 duplicate head attends about evenly to every copy "
              "of its token, itself included, so 0.5 is its ceiling on one earlier copy: at least 0.4, a tenth left for BOS."),
    # --- E2 ---
    Threshold("E2.logit-diff", "tiny-stories-8M", "logit_diff", 9.4, "within", 9.4, 0.15,
              f"TinyStories-8M's mean logit diff is 9.4. {_LOGIT_DIFF_SETUP}"),
    Threshold("E2.logit-diff", "gpt2-small", "logit_diff", 3.6, "within", 3.6, 0.15,
              f"GPT-2 small's mean logit diff is 3.6 (real weights: public reference 3.55, inside the band). {_LOGIT_DIFF_SETUP}"),
    # The ordering TS-8M > GPT-2 small, per model against the other model's thesis value, so it needs
    # no cross-model run: each model is checked alone, and the two rows together imply the ordering.
    Threshold("E2.logit-diff", "tiny-stories-8M", "logit_diff", 9.4, ">", 3.6, None,
              "Ordering TS-8M > GPT-2 small (thesis s3.4): TS-8M must beat GPT-2 small's thesis value 3.6."),
    Threshold("E2.logit-diff", "gpt2-small", "logit_diff", 3.6, "<", 9.4, None,
              "Ordering TS-8M > GPT-2 small (thesis s3.4): GPT-2 small must stay below TS-8M's thesis value 9.4."),
    # E2 observational half (thesis s3.4.2; claims/thesis/e2_logit_lens.py, test_e2_dla.py,
    # test_e2_attention.py), all on the 8 protocol prompts, final LayerNorm scale frozen from the
    # clean run as in the thesis's figures. The thesis reads these off figures and gives words, not
    # numbers, except H7.7's ~0.7; each bound below turns a word into a number and says why.
    Threshold("E2.lens-monotone", "tiny-stories-8M", "largest_drop_fraction", 0.0, "<=", 0.05, 0.05,
              "Thesis s3.4.2/fig 3.7: in TS-8M the logit difference 'only increases' across the residual stream. "
              "Tolerance: no sublayer may lower it by more than 5% of the lens's total movement (~0.5 logit of 9.4, "
              "about the smallest dip a plot of the figure's 0-10 scale shows); the GPT-2 row's 'clear dip' starts there."),
    Threshold("E2.lens-monotone", "gpt2-small", "largest_drop_fraction", None, ">=", 0.05, None,
              "Thesis s3.4.2/fig 3.8: in GPT-2 small the logit difference 'sometimes decreases' (negative name movers, "
              "Wang et al.). A clear dip: one sublayer takes away at least 5% of the lens's total movement, the "
              "line the TS-8M row stays under. Real weights: the negative movers take ~0.3 of the logit difference."),
    Threshold("E2.lens-monotone", "gpt2-small", "largest_drop_layer", None, "within", 10.5, 0.5,
              "Thesis s3.4.2: the dip is 'attributed to Negative Name Mover Heads' (Wang et al.: 10.7, 11.10), so the "
              "largest drop sits in layer 10 or 11."),
    Threshold("E2.lens-jump", "tiny-stories-8M", "jump_layer", 7, "within", 7, 0,
              "Thesis s3.4.2: the largest part of the logit difference is written at layer 7 in TS-8M (exact layer)."),
    Threshold("E2.lens-jump", "gpt2-small", "jump_layer", 9, "within", 9, 0,
              "Thesis s3.4.2: the largest part of the logit difference is written at layer 9 in GPT-2 small (exact layer)."),
    Threshold("E2.lens-jump", "tiny-stories-8M", "jump_share", None, ">", 0.5, None,
              "Thesis s3.4.2: 'the majority' of the logit difference is achieved at that single layer: its increase is "
              "more than half of the net change over all layers."),
    Threshold("E2.lens-jump", "gpt2-small", "jump_share", None, ">", 0.5, None,
              "Thesis s3.4.2: 'the majority' of the logit difference is achieved at that single layer: its increase is "
              "more than half of the net change over all layers."),
    Threshold("E2.dla-single", "tiny-stories-8M", "H7.7_over_next_head", None, ">=", 3.0, None,
              "Thesis s3.4.2/fig 3.9: only H7.7 has 'any noticeable direct impact'. Wide margin read as H7.7's DLA at "
              "least 3x the largest |DLA| of any other head (a head at a third of the maximum would be plainly "
              "visible on the figure's linear colour scale)."),
    Threshold("E2.dla-single", "gpt2-small", "top_over_second_positive_head", None, "<", 3.0, None,
              "Thesis s3.4.2/fig 3.10: in GPT-2 small the direct effect is 'more distributed', and Wang et al.'s "
              "strongest name movers H9.9, H9.6, H10.0 'also have the largest logit difference attribution'. So the "
              "answer is written by several heads: the top positive head is under 3x the second (the factor the TS-8M "
              "row requires of H7.7). Real weights: the top name mover about 2x the second. Negative heads are "
              "E2.no-neg-mover's."),
    Threshold("E2.dla-single", "gpt2-small", "top_positive_head_fraction", None, ">=", 0.25, None,
              "Floor for the row above, which a model whose heads write nothing would also pass: name movers write "
              "the answer (Wang et al.: H9.9, H9.6, H10.0 hold the largest attribution), so the top head carries at "
              "least a quarter of the logit difference. With the top ~2x the second, three movers and negative heads "
              "taking ~0.3, real weights should give about half."),
    Threshold("E2.no-neg-mover", "tiny-stories-8M", "most_negative_head_fraction", 0.0, ">=", -0.05, 0.05,
              "Thesis s3.4.2/fig 3.9: TS-8M has no negative name mover heads. No head may take away more than 5% of "
              "the logit difference (~0.5 of 9.4) directly."),
    Threshold("E2.no-neg-mover", "gpt2-small", "most_negative_head_fraction", None, "<=", -0.1, None,
              "Thesis s3.4.2/fig 3.10 and Wang et al.: GPT-2 small has negative name movers (10.7, 11.10, shown in "
              "details). One head must take away at least 10% of the logit difference, twice the TS-8M allowance. "
              "Real weights: about -0.3 of the logit difference (10.7 and 11.10 together)."),
    Threshold("E2.no-neg-mover", "gpt2-small", "most_negative_head_layer", None, "within", 10.5, 0.5,
              "Wang et al.'s negative name movers are 10.7 and 11.10 (after the name movers of layer 9): the most "
              "negative head sits in layer 10 or 11."),
    Threshold("E2.h77-name-mover", "tiny-stories-8M", "H7.7_END_to_IO", 0.7, ">=", 0.5, 0.2,
              "Thesis s3.4.2/fig 3.17 and s3.5.1: H7.7 attends from END ('to') to IO with weight ~0.7. Tolerance 0.2: "
              "the thesis reads 0.7 off one prompt's figure; the mean over 8 prompts may differ. (The thesis's 'H7.7 "
              "0.7 -> 0.3' after ablation is given for two features, 44 and 2338: see DESIGN.md.)"),
    Threshold("E2.h77-name-mover", "tiny-stories-8M", "H7.7_IO_over_S", None, ">=", 3.0, None,
              "Thesis s3.4.2/fig 3.17, s3.5.1: H7.7 'only moves the IO name'; END->IO at least 3x END->S (S1 + S2)."),
    Threshold("E2.h77-name-mover", "gpt2-small", "H9.9_END_to_IO", None, ">=", 0.5, None,
              "Thesis s3.4.2/fig 3.15: GPT-2 small's name mover H9.9 moves IO to END as H7.7 does; same 0.5 bound as H7.7's row."),
    Threshold("E2.h77-name-mover", "gpt2-small", "H9.6_END_to_IO", None, ">=", 0.5, None,
              "Thesis s3.4.2/fig 3.16: GPT-2 small's name mover H9.6 moves IO to END as H7.7 does; same 0.5 bound as H7.7's row."),
    Threshold("E2.h77-name-mover", "gpt2-small", "H9.9_IO_over_S", None, ">=", 3.0, None,
              "Thesis s3.4.2/figs 3.15, 3.17: H9.9's pattern is like H7.7's: END->IO at least 3x END->S, as for H7.7."),
    Threshold("E2.h77-name-mover", "gpt2-small", "H9.6_IO_over_S", None, ">=", 3.0, None,
              "Thesis s3.4.2/figs 3.16, 3.17: H9.6's pattern is like H7.7's: END->IO at least 3x END->S, as for H7.7."),
    *[
        Threshold("E2.h57-s-inhibition", model, f"{head}_{quantity}", None, ">=", bound, None,
                  f"Thesis s3.4.2/{figure}: {head} {words}. The thesis gives no weights; {reason}")
        for model, head, figure in (("tiny-stories-8M", "H5.7", "fig 3.19"), ("gpt2-small", "H8.6", "fig 3.18"))
        for quantity, bound, words, reason in (
            ("END_to_S2", 0.2, "sends S2 to the END position",
             "0.2 is 3x the uniform share over END's 15 keys (1/15)."),
            ("verb_to_S2", 0.2, "sends S2 to the 'gave' position",
             "0.2 is 2.4x the uniform share over the verb's 12 keys (1/12)."),
            ("and_to_S1", 0.25, "sends S1 to the following 'and' (prompts where S1 comes first)",
             "the 'and' sees only 4 keys (BOS, first word, S1, itself), and real heads keep much of their attention on "
             "the BOS sink: S1 gets at least their uniform share 0.25, where a head not reading S1 gives it little."),
        )
    ],
    Threshold("E2.h611-secondary", "tiny-stories-8M", "H6.11_END_to_IO", None, ">=", 0.15, None,
              "Thesis s3.5.1/fig 3.21: H6.11 moves both names into END. Attending to IO: at least 0.15, over 2x the "
              "uniform share over END's 15 keys."),
    Threshold("E2.h611-secondary", "tiny-stories-8M", "H6.11_END_to_S", None, ">=", 0.15, None,
              "Thesis s3.5.1/fig 3.21: H6.11 moves both names, the subject too (unlike H7.7). Attending to S (S1 + S2): "
              "at least 0.15, over 2x the uniform share over END's 15 keys."),
    Threshold("E2.h611-secondary", "tiny-stories-8M", "H6.11_minus_H7.7_patching_effect", None, "<", 0.0, None,
              "Thesis s3.5.1 with fig 3.13: H6.11 is a weaker name mover than H7.7: patching its output on the thesis's "
              "pair (s3.4.2) restores less of the clean logit difference than patching H7.7's."),
    # E2.resid-patch-s2 / E2.head-patch / E2.eap-edges: the thesis's patching pair (s3.4.2), corrupt -> clean
    # (clean activations into the corrupted run, s2.5.6), effects normalized: corrupted 0, clean 1.
    Threshold("E2.resid-patch-s2", "tiny-stories-8M", "S2_effect_first_half", None, ">=", 0.5, None,
              "Fig 3.11 (s3.4.2): in the early and middle layers the residual-patching effect sits at S2. Mean effect at "
              "S2 over layers 1-3 at least 0.5, most of the clean-corrupted gap. Layer 0 is left out: only S2's token "
              "differs, so it is 1 in any model (mechinterp.patching.s2_to_end_handover)."),
    Threshold("E2.resid-patch-s2", "tiny-stories-8M", "END_effect_last_layer", None, ">=", 0.5, None,
              "Fig 3.11 (s3.4.2): in the late layers the effect sits at END. Patching END before the last block "
              "restores at least half the gap."),
    Threshold("E2.resid-patch-s2", "tiny-stories-8M", "handover_layer", None, ">=", 4, None,
              "s3.4.2: TS-8M uses 'information stored in the S2 position in one of the later layers' to get it into "
              "END. The first layer where END's effect exceeds S2's lies in the second half (4-7 of 8 layers)."),
    Threshold("E2.resid-patch-s2", "tiny-stories-8M", "handover_layer", None, "<=", 7, None,
              "s3.4.2: the handover from S2 to END happens inside the model (8 means END never overtakes S2)."),
    Threshold("E2.resid-patch-s2", "gpt2-small", "S2_effect_first_half", None, ">=", 0.5, None,
              "Fig 3.12 (s3.4.2, 'just like in GPT2-small'): the effect sits at S2 in early/middle layers; mean over "
              "layers 1-5 at least 0.5 of the gap, as for TS-8M (layer 0 left out, 1 by construction)."),
    Threshold("E2.resid-patch-s2", "gpt2-small", "END_effect_last_layer", None, ">=", 0.5, None,
              "Fig 3.12 (s3.4.2): in the late layers the effect sits at END; patching END before block 11 restores "
              "at least half the gap."),
    Threshold("E2.resid-patch-s2", "gpt2-small", "handover_layer", None, ">=", 6, None,
              "Fig 3.12 (s3.4.2): as in TS-8M, in the later layers; GPT-2 small's S-inhibition heads (7.3, 7.9, 8.6, "
              "8.10; Wang et al. 2022) move S2's information to END in layers 7-8, so the handover is in layers 6-11."),
    Threshold("E2.resid-patch-s2", "gpt2-small", "handover_layer", None, "<=", 11, None,
              "s3.4.2: the handover from S2 to END happens inside the model (12 means END never overtakes S2)."),
    Threshold("E2.head-patch", "tiny-stories-8M", "H7.7_rank", None, "<=", 2, None,
              "Fig 3.13 (s3.4.2): 'H7.7 matters quite a lot'; with H5.7 it is one of the two heads (of 128) with the "
              "largest |head-output patching effect|. No tolerance: a rank."),
    Threshold("E2.head-patch", "tiny-stories-8M", "H5.7_rank", None, "<=", 2, None,
              "Fig 3.13 (s3.4.2): 'H5.7 is important' and 'also had a high head output patching score': one of the "
              "top two heads by |effect|. No tolerance: a rank."),
    Threshold("E2.head-patch", "tiny-stories-8M", "H5.7_over_H7.7_abs_dla", 0.0, "<=", 0.1, 0.1,
              "s3.4.2: H5.7 'didn't have any direct contribution to the logit difference' (fig 3.9: only H7.7 is "
              "noticeable). Tolerance: its |DLA| on the clean prompt at most 10% of H7.7's."),
    # 'A smaller amount of heads' read relatively, not as a head count the thesis never gives: the share of all
    # heads' |patching effect| that the top two carry, one line for both models (128 vs 144 heads alike).
    Threshold("E2.head-patch", "tiny-stories-8M", "top2_share_of_abs_effect", None, ">=", 0.5, None,
              "s3.4.2: compared with GPT-2 small 'there's a smaller amount of heads used to perform the task', and in "
              "fig 3.13 H7.7 and H5.7 stand out: the top two heads carry at least half of all heads' |effect|."),
    Threshold("E2.head-patch", "gpt2-small", "top2_share_of_abs_effect", None, "<", 0.5, None,
              "s3.4.2, GPT-2 side of the same sentence (fig 3.14): the effect is spread over Wang et al.'s circuit "
              "(duplicate, induction, S-inhibition, name mover and negative heads), so the top two carry under half."),
    *[
        Threshold("E2.eap-edges", "tiny-stories-8M", f"in_rank_{down}<-{up}", None, "<=", bound, None,
                  f"s3.4.2 (list under fig 3.20): {text}. Among the in-edges of {down} (by |EAP score|) the edge from "
                  f"{up} ranks {'first' if bound == 1 else 'in the top two'}.")
        for up, down, bound, text in (
            ("H5.7", "H7.7.q", 1, "H7.7's query matrix reads from the output of H5.7"),
            ("H4.0", "H5.7.v", 2, "H5.7's value matrix reads from the output of H4.0. The corruption changes S2's token, "
             "so embed and MLP0 at S2 differ too and H5.7 reads S2 directly: one of them may outrank H4.0 without H4.0 "
             "mattering less (the no-mlp0-copy mutant: rank 2, H4.0 intact)"),
            *((up, "H7.7.v", 2, "H7.7's value matrix reads from the output of MLP0 and Embed (inconsistent with the "
               "next paragraph's 'heads tend to read from MLP0 instead of the Embedding', DESIGN.md: either order "
               "passes)") for up in ("MLP0", "embed")),
        )
    ],
    *[
        Threshold("E2.eap-edges", "tiny-stories-8M", f"rank_{down}<-{up}", None, "<=", 30, None,
                  f"Fig 3.20 (s3.4.2): {up} -> {down} is drawn in the discovered circuit. Its size is not stated; a "
                  "figure-readable circuit is taken as at most 30 edges, so the edge ranks in the top 30 of the whole "
                  "graph (about 24,000 edges) by |EAP score|. The 30 is a reading, not a thesis number; the in-rank rows "
                  "carry the composition, this one that the edge stands out in the whole graph.")
        for up, down in (("H5.7", "H7.7.q"), ("H4.0", "H5.7.v"), ("MLP0", "H7.7.v"), ("embed", "H7.7.v"))
    ],
    # --- E3 ---
    # E3 (s3.5): each claim names its feature by role (mechinterp.features.ROLES); the thesis's index is the
    # role's alias. Measured on the thesis's prompt, the clean prompt of s3.4.2 (IO = Mary; the 8 protocol
    # prompts are reported beside, prefixed '8p.', no rows). Ablation = projecting the decoder direction out
    # of the residual stream after the block, at every position. The thesis's attention numbers are
    # one-decimal readings of figures, so ratios of them carry about +-0.1 of rounding. Where the thesis
    # reports a graded effect (L5 ablations: P(IO) 4.8%, H7.7 keeps 0.3 of 0.7) the band is two-sided: a
    # total collapse is not what it found. Attribution leads are summed over near-copies (decoder cos >= 0.9)
    # of each feature first, so they do not hang on how one SAE splits a direction.
    Threshold("E3.L6-to-feature-collapse", "tiny-stories-8M", "p_io_ablated", 0.0025, "<=", 0.05, 0.0475,
              "s3.5.2: ablating feature 1059 drops P(IO) from 77.3% to 0.25%. Bound 5%: 20x the thesis value, yet "
              "under 1/15 of the clean 77.3%, so a pass still means P(IO) collapsed; the slack is for a retrained SAE "
              "whose role feature carries the direction less purely than the thesis's. One-sided: the thesis reports a collapse."),
    Threshold("E3.L6-to-feature-collapse", "tiny-stories-8M", "p_io_ablated_over_clean", 0.0032, "<=", 0.1, 0.097,
              "s3.5.2: the same collapse relative to the model's own clean P(IO) (0.25 / 77.3 = 0.003): at most a "
              "tenth of it remains."),
    Threshold("E3.L6-to-feature-collapse", "tiny-stories-8M", "H7.7_END_to_names_after_over_before", None, "<=", 0.5, None,
              "s3.5.2, figs 3.24-3.25: after the ablation H7.7 'no longer pays attention to the previous names'. "
              "Operational: its END attention to IO + S1 + S2 at least halves."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "p_io_ablated", 0.048, "<=", 0.15, 0.102,
              "s3.5.1: ablating feature 44 changes P(IO) from 77.3% to 4.8%. Bound 15%: about 3x the thesis value, "
              "still under a fifth of the clean 77.3%."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "p_io_ablated", 0.048, ">=", 0.01, 0.038,
              "s3.5.1 vs s3.5.2: ablating 44 leaves P(IO) at 4.8%, 19x what ablating the layer-6 feature leaves "
              "(0.25%): a graded effect, not a collapse. Bound 1%: 4x the layer-6 value, a fifth of 4.8%."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "p_io_ablated_over_clean", 0.062, "<=", 0.2, 0.138,
              "s3.5.1: relative to the clean P(IO), 4.8 / 77.3 = 0.062 remains; bound 0.2 (about 3x, as above)."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "H6.11_END_to_names_after_over_before", None, "<=", 0.5, None,
              "s3.5.1, figs 3.21-3.22: after the ablation H6.11's 'to' no longer attends to previous names (attention "
              "goes to ',' and BOS). Operational: its END attention to IO + S1 + S2 at least halves."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "H7.7_END_to_IO_after_over_before", 0.43, "<=", 0.7, 0.27,
              "s3.5.1: H7.7's END->IO attention goes 0.7 -> 0.3 (ratio 0.43; 0.36-0.54 given one-decimal rounding). "
              "Bound 0.7: a fall of at least 30%, the tolerance covering rounding and SAE differences."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "H7.7_END_to_IO_after_over_before", 0.43, ">=", 0.2, 0.23,
              "s3.5.1: after the ablation IO 'is still the only position attended to except for the beginning of "
              "string': H7.7 keeps part of its attention (0.3 of 0.7). Bound 0.2: under half the thesis's 0.43, "
              "well above the near-zero of a collapse."),
    Threshold("E3.L5-to-feature", "tiny-stories-8M", "attribution", None, "<", -0.01, None,
              "s3.5.1: 44 'had quite large negative feature attribution, in fact third most negative of all "
              "features' (the thesis's reading: decreasing it stops H6.11 moving S into END). Its sign must be "
              "negative, beyond float noise (0.01 logits: ATTRIBUTION_NOISE, above); the rank is "
              "reported (attribution_rank_from_most_negative), not bounded."),
    Threshold("E3.L5-gave-feature", "tiny-stories-8M", "verb_share", 1.0, ">=", 0.75, 0.25,
              "s3.5.1: feature 2338 'activates on gave'. Its strongest activation (BOS excluded) is at the verb after S2 "
              "(on the one prompt: 1 = yes; on the 8, at least 6 of them)."),
    Threshold("E3.L5-gave-feature", "tiny-stories-8M", "attribution_over_runner_up", 2.63, ">=", 1.5, 1.13,
              "Table 3.3: 2338 has attribution 5.15, the next 1.96 (ratio 2.6, 'significantly higher than the others'). "
              "Bound 1.5: the role feature (with its near-copies) leads the next (with its copies) by at least half again."),
    Threshold("E3.L5-gave-feature", "tiny-stories-8M", "H7.7_END_to_IO_after_over_before", 0.43, "<=", 0.7, 0.27,
              "s3.5.1: ablating 2338 changes H7.7's 'to'->IO attention from 0.7 to 0.3 (ratio 0.43, 0.36-0.54 with "
              "rounding). Bound 0.7: a fall of at least 30%."),
    Threshold("E3.L5-gave-feature", "tiny-stories-8M", "H7.7_END_to_IO_after_over_before", 0.43, ">=", 0.2, 0.23,
              "s3.5.1: the same 0.7 -> 0.3: H7.7 keeps part of its attention to IO. Bound 0.2, as for feature 44."),
    Threshold("E3.L5-gave-feature", "tiny-stories-8M", "H6.11_END_to_names_after_over_before", None, ">=", 0.75, None,
              "s3.5.1: 2338 'doesn't influence the attention pattern of H6.11 significantly': H6.11 keeps at least 75% "
              "of its END attention to the names."),
    Threshold("E3.L5-infinitive-to", "tiny-stories-8M", "to_attention_after_over_before", None, ">=", 2.0, None,
              "s3.5.1, fig 3.23: ablating 1276 made 'every head in every subsequent layer pay strong attention to "
              "previous instances of to'. Mean over all heads of layers 6-7 of END's attention to earlier ' to' "
              "tokens: at least doubled."),
    Threshold("E3.L5-infinitive-to", "tiny-stories-8M", "to_attention_after", None, ">=", 0.25, None,
              "s3.5.1, fig 3.23: 'strong' attention: after the ablation that mean is at least 0.25, nearly 4x the "
              "uniform share over END's 15 keys."),
    Threshold("E3.L6-negative-names", "tiny-stories-8M", "attribution", -7.79, "<", -0.01, None,
              "Table 3.8: the role's feature (2837) has the most negative attribution, -7.79; it must be negative, "
              "beyond float noise (0.01 logits: ATTRIBUTION_NOISE, above)."),
    Threshold("E3.L6-negative-names", "tiny-stories-8M", "attribution_over_runner_up", 1.98, ">=", 1.5, 0.48,
              "s3.5.2, table 3.8: 2837 has 'by far the largest negative attribution', -7.79 against the next -3.93 "
              "(ratio 1.98). Bound 1.5, as for the L5 verb feature: the role feature (with its near-copies) leads the "
              "next by at least half again."),
    Threshold("E3.L6-negative-names", "tiny-stories-8M", "name_share_top_contexts", 1.0, ">=", 0.7, 0.3,
              "Table 3.9: all 11 max-activating tokens of 2837 are names (Amy, Lily, Mary, Anna, Molly, Sarah). "
              "Bound: at least 7 of the top 10 tokens over the text searched are names ('mostly names')."),
    Threshold("E3.L6-negative-names", "tiny-stories-8M", "distinct_names_top_contexts", 6.0, ">=", 3.0, 3.0,
              "Table 3.9: 'a cluster of names': 6 different names among its top 11 tokens. Bound 3: a feature firing "
              "on one or two names is a name's own feature, not a cluster."),
    Threshold("E3.L7-logit-feature", "tiny-stories-8M", "attribution_over_runner_up", 58.6, ">=", 10.0, 48.6,
              "s3.5.3: 1854 is 'the only feature that had any significant feature attribution' (4.1, next 0.07: 59x). "
              "Bound 10x: one feature (with its near-copies) still far above every other."),
    Threshold("E3.L7-logit-feature", "tiny-stories-8M", "name_share_top_unembed_tokens", 1.0, ">=", 0.7, 0.3,
              "s3.5.3: W_dec[1854] @ W_U ranks 'Mary' and ' Mary' first, 'after which are a bunch of other names': at "
              "least 7 of the top 10 tokens are names."),
    Threshold("E3.L7-logit-feature", "tiny-stories-8M", "top_unembed_token_is_io", 1.0, ">=", 1.0, None,
              "s3.5.3: the top token of W_dec[1854] @ W_U is the prompt's IO ('Mary' on the s3.4.2 prompt); "
              "1 = it is, 0 = not (on the 8 prompts, reported only: the share of prompts whose IO it is)."),
    *[
        Threshold("E3.random-control", "tiny-stories-8M", f"mean_abs_delta_p_io_L{block}", None, "<=", 0.02, None,
                  f"s3.5.1: 'Ablating random features doesn't impact performance by any significant amount.' Mean "
                  f"|change in P(IO)| over 30 random live layer-{block} features (live = fires on text; role features and their copies, decoder cos >= 0.9, excluded) at most 2 points: "
                  f"under 3% of the 72.5-point drop from ablating feature 44 (77.3% -> 4.8%).")
        for block in (5, 6)
    ],
]




# --- which planted models break each row ------------------------------------------------------------------
# Every E0 / E1 / E2 row names the planted models it fails on (tests/test_claim_pairs_* assert it; a row without
# an entry is a collection error there). A mutant (fixtures.planted.MUTANTS) must also list the row's claim in
# its `breaks`; a planted twin breaks rows whose finding is an absence (E0's "1M / 3M do not perform IOI" fail
# on the TS-8M twin, which performs it). E3's rows are checked claim by claim (tests/test_claim_pairs_e3.py).
TS, GPT2 = "tinystories-8m", "gpt2-small"
TS8M, GPT2S = "tiny-stories-8M", "gpt2-small"

# Row -> the planted models on which it fails (the test files assert it). A mutant (fixtures.planted.MUTANTS)
# must also list the row's claim in its `breaks`; a planted twin breaks rows whose finding is an absence
# (E0's "1M / 3M do not perform IOI" fail on the TS-8M twin, which performs it).
def ts(*mutants: str) -> tuple[str, ...]:
    return tuple(f"{TS}/{m}" for m in mutants)


def gpt2(*mutants: str) -> tuple[str, ...]:
    return tuple(f"{GPT2}/{m}" for m in mutants)


ROW_BREAKERS: dict[RowKey, tuple[str, ...]] = {
    **{("E0.smallest-ioi", version, quantity, "<="): (TS,) for version in ("tiny-stories-1M", "tiny-stories-3M")
       for quantity in ("logit_diff", "p_io_minus_p_s")},
    ("E0.smallest-ioi", TS8M, "logit_diff", ">="): ts("no-s-inhibition"),  # and the random-init 8M twin
    ("E0.smallest-ioi", TS8M, "p_io_minus_p_s", ">="): ts("no-s-inhibition"),
    # E1
    ("E1.prev-weaker", GPT2S, "H4.11_prev_token_score", ">="): gpt2("weak-previous-token"),
    ("E1.prev-weaker", TS8M, "max_prev_token_score", "<="): ts("strong-previous-token"),
    ("E1.no-induction", TS8M, "max_induction_score", "<"): ts("induction-head"),
    ("E1.no-induction", GPT2S, "n_heads_induction_score_ge_0.4", ">="): gpt2("no-induction"),
    ("E1.dup-weak", TS8M, "H4.0_dup_margin_over_next_head", ">"): ts("duplicate-head-moved"),
    ("E1.dup-weak", TS8M, "H4.0_dup_score", "<"): ts("strong-duplicate"),
    ("E1.dup-weak", GPT2S, "H3.0_dup_score", ">="): gpt2("weak-duplicates"),
    ("E1.dup-weak", GPT2S, "H0.5_dup_score", ">="): gpt2("weak-duplicates"),
    # E2, observational
    ("E2.logit-diff", TS8M, "logit_diff", "within"): ts("weak-name-mover", "negative-name-mover", "no-s-inhibition"),
    ("E2.logit-diff", GPT2S, "logit_diff", "within"): gpt2("no-negative-name-movers", "no-s-inhibition", "tinystories-strength"),
    ("E2.logit-diff", TS8M, "logit_diff", ">"): ts("no-s-inhibition"),
    ("E2.logit-diff", GPT2S, "logit_diff", "<"): gpt2("tinystories-strength"),
    ("E2.lens-monotone", TS8M, "largest_drop_fraction", "<="): ts("negative-name-mover"),
    ("E2.lens-monotone", GPT2S, "largest_drop_fraction", ">="): gpt2("no-negative-name-movers"),
    ("E2.lens-monotone", GPT2S, "largest_drop_layer", "within"): gpt2("early-negative-movers"),
    ("E2.lens-jump", TS8M, "jump_layer", "within"): ts("name-mover-in-layer-6"),
    ("E2.lens-jump", GPT2S, "jump_layer", "within"): gpt2("late-name-movers"),
    # no share of a logit difference that the layers do not add up to (NaN)
    ("E2.lens-jump", TS8M, "jump_share", ">"): ts("no-s-inhibition"),
    ("E2.lens-jump", GPT2S, "jump_share", ">"): gpt2("no-s-inhibition"),
    ("E2.dla-single", TS8M, "H7.7_over_next_head", ">="): ts("split-name-mover", "name-mover-moved", "name-mover-in-layer-6"),
    ("E2.dla-single", GPT2S, "top_over_second_positive_head", "<"): gpt2("one-name-mover"),
    ("E2.dla-single", GPT2S, "top_positive_head_fraction", ">="): gpt2("diffuse-name-movers"),
    ("E2.no-neg-mover", TS8M, "most_negative_head_fraction", ">="): ts("negative-name-mover"),
    ("E2.no-neg-mover", GPT2S, "most_negative_head_fraction", "<="): gpt2("no-negative-name-movers"),
    ("E2.no-neg-mover", GPT2S, "most_negative_head_layer", "within"): gpt2("early-negative-movers"),
    **{("E2.h77-name-mover", TS8M, q, ">="): ts("no-s-inhibition", "name-mover-moved", "name-mover-in-layer-6")
       for q in ("H7.7_END_to_IO", "H7.7_IO_over_S")},
    ("E2.h77-name-mover", GPT2S, "H9.9_END_to_IO", ">="): gpt2("late-name-movers"),
    ("E2.h77-name-mover", GPT2S, "H9.9_IO_over_S", ">="): gpt2("late-name-movers"),
    ("E2.h77-name-mover", GPT2S, "H9.6_END_to_IO", ">="): gpt2("one-name-mover", "late-name-movers"),
    ("E2.h77-name-mover", GPT2S, "H9.6_IO_over_S", ">="): gpt2("one-name-mover", "late-name-movers"),
    **{("E2.h57-s-inhibition", model, f"{head}_{q}", ">="): breaker
       for model, head, breaker in ((TS8M, "H5.7", ts("no-s-inhibition")), (GPT2S, "H8.6", gpt2("no-s-inhibition")))
       for q in ("END_to_S2", "verb_to_S2", "and_to_S1")},
    ("E2.h611-secondary", TS8M, "H6.11_END_to_IO", ">="): ts("no-secondary-name-mover"),
    ("E2.h611-secondary", TS8M, "H6.11_END_to_S", ">="): ts("no-secondary-name-mover", "swapped-name-movers"),
    ("E2.h611-secondary", TS8M, "H6.11_minus_H7.7_patching_effect", "<"): ts("swapped-name-movers"),
    # E2, causal
    ("E2.resid-patch-s2", TS8M, "S2_effect_first_half", ">="): ts("early-s2-circuit"),
    ("E2.resid-patch-s2", TS8M, "END_effect_last_layer", ">="): ts("no-s-inhibition"),
    ("E2.resid-patch-s2", TS8M, "handover_layer", ">="): ts("early-s2-circuit"),
    ("E2.resid-patch-s2", TS8M, "handover_layer", "<="): ts("no-s-inhibition"),
    ("E2.resid-patch-s2", GPT2S, "S2_effect_first_half", ">="): gpt2("early-s-inhibition"),
    ("E2.resid-patch-s2", GPT2S, "END_effect_last_layer", ">="): gpt2("last-layer-circuit"),
    ("E2.resid-patch-s2", GPT2S, "handover_layer", ">="): gpt2("early-s-inhibition"),
    ("E2.resid-patch-s2", GPT2S, "handover_layer", "<="): gpt2("last-layer-circuit"),
    ("E2.head-patch", TS8M, "H7.7_rank", "<="): ts("name-mover-moved"),
    ("E2.head-patch", TS8M, "H5.7_rank", "<="): ts("no-s-inhibition", "spread-circuit"),
    ("E2.head-patch", TS8M, "H5.7_over_H7.7_abs_dla", "<="): ts("name-mover-moved"),
    ("E2.head-patch", TS8M, "top2_share_of_abs_effect", ">="): ts("spread-circuit"),
    ("E2.head-patch", GPT2S, "top2_share_of_abs_effect", "<"): gpt2("one-name-mover"),
    ("E2.eap-edges", TS8M, "in_rank_H7.7.q<-H5.7", "<="): ts("no-s-inhibition", "name-mover-moved"),
    ("E2.eap-edges", TS8M, "rank_H7.7.q<-H5.7", "<="): ts("no-s-inhibition", "name-mover-moved"),
    ("E2.eap-edges", TS8M, "in_rank_H5.7.v<-H4.0", "<="): ts("no-s-inhibition", "duplicate-head-moved"),
    ("E2.eap-edges", TS8M, "rank_H5.7.v<-H4.0", "<="): ts("no-s-inhibition", "duplicate-head-moved"),
    # name-mover-moved: H7.7 rests, so its in-edges score zero; perfect-inhibition: ~1e-9 of the top edge
    **{("E2.eap-edges", TS8M, f"{rank}_H7.7.v<-{up}", "<="): ts("name-mover-moved", "perfect-inhibition", *extra)
       for rank in ("rank", "in_rank") for up, extra in (("MLP0", ("no-mlp0-copy",)), ("embed", ()))},
}


# E3: gaps measured with the default SAEs of the run (PLANTED_SAE_CONFIG, claims/sae_sources.py); with
# --sae-config / --sae-dir the claim is checked plainly, whatever it shows.
E3_DEFAULT_SAES = ("sae_dir", "sae_config")
# Values: the thesis's prompt, trained SAEs (seed 0) and, in brackets, the oracle SAEs of
# fixtures.planted.oracle_sae (exact planted directions: a gap there is the twin's, not SAE training's).
TS_TWIN = "planted:tinystories-8m"
TS_GRADED = "planted:tinystories-8m/e3-graded"

KNOWN_GAPS: list[KnownGap] = [
    KnownGap("E3.L5-to-feature", TS_TWIN, ("p_io_ablated", "H7.7_END_to_IO_after_over_before", "attribution"),
             "the twin's L5 ablation is a collapse, not the thesis's graded effect: P(IO) 77% -> 2e-5 (oracle 4e-4; "
             "thesis 4.8%), since projecting to@5 also turns off H6.11's lift of both names, which is what lifts IO "
             "above the vocabulary at the calibrated P(IO); H7.7 keeps 0.0006 of its END->IO attention (oracle "
             "0.28, passing). The feature's attribution is +1.58 (oracle +4.2; thesis: third most negative): "
             "H6.11 lifts IO and S alike, so to@5 only helps through its share of to@6. No retuning of this twin "
             "passes the graded rows: with H7.7's calibrated 13.6 logits per unit attention, P(IO) is 1-15% only "
             "when H7.7 keeps 0.6-0.7 of its attention (tests/test_claim_pairs_e3.py, ORACLE_TWIN_GAPS); the regraded "
             "variant planted:tinystories-8m/e3-graded passes these rows with the oracle", E3_DEFAULT_SAES),
    KnownGap("E3.L5-gave-feature", TS_TWIN, ("verb_share", "H7.7_END_to_IO_after_over_before"),
             "ablating the verb feature leaves H7.7 0.002 of its END->IO attention (oracle 0.008; thesis 0.43): "
             "verb@5 carries 0.7 of to@6, a score drop H7.7 cannot absorb. On the one prompt the trained "
             "top-attribution feature (7 copies summed) peaks off the verb (verb_share 0; 1.0 on the 8 prompts; "
             "oracle 1.0)", E3_DEFAULT_SAES),
    KnownGap("E3.L5-infinitive-to", TS_TWIN, ("to_attention_after", "to_attention_after_over_before"),
             "the trained infinitive feature carries is-to and the ' to' position code with inf@5, so projecting "
             "it removes the later heads' attraction to earlier ' to' together with what cancels it: attention "
             "to earlier ' to' goes 1.3e-6 -> 7.0e-6 on SAE seed 0 (ratio 5.4 passes, 'strong' fails) and to "
             "1.9e-7 / 7.8e-7 on seeds 1 / 2 (ratios 0.15 / 0.60 fail too: seed 0's pass of the ratio row was "
             "the seed's, --sae-seeds 0,1,2); the exact direction (oracle) gives 0.90", E3_DEFAULT_SAES),
    KnownGap("E3.L6-negative-names", TS_TWIN, ("distinct_names_top_contexts",),
             "the trained feature of most negative attribution (-13.8 with its copy) is one name's own feature: "
             "its top 10 contexts hold 1 distinct name (oracle names@6: 8). names@6 always comes with a name's "
             "code, so the SAE folds it into one feature per name", E3_DEFAULT_SAES),
    KnownGap("E3.L7-logit-feature", TS_TWIN, ("attribution_over_runner_up", "top_unembed_token_is_io"),
             "the top trained feature leads the next by far less than the thesis's 59 (the oracle, whose name features "
             "have a JumpReLU threshold, passes): the next is another name's logit direction, which fires on Mary's "
             "write because the twin packs 40 names into 12 dimensions (overlaps up to ~0.38) and the trained gated "
             "SAE's threshold does not cut that leak. Measured on two machines with the same code, twin, corpus and "
             "config (training is deterministic on one machine, not across them): one gave 3 copies, attribution "
             "4.26, W_U top token ' Mary' (the IO), lead 2.06; the other, SAE seeds 0 / 1 / 2: leads 11.4 / 0.40 / "
             "1.17, seed 1's top feature (one copy) unembedding to another name first, so the IO row fails on that "
             "seed. On the 8 prompts the lead is 0.5-1.0: 8 IO names share the attribution, so no name-specific "
             "feature can lead there", E3_DEFAULT_SAES, seed_dependent=True),
    KnownGap("E3.random-control", TS_TWIN, ("mean_abs_delta_p_io_L5", "mean_abs_delta_p_io_L6"),
             "mean |dP(IO)| over 30 random live trained features is 0.19 after block 5 and 0.19 after block 6 "
             "(8 prompts: 0.15 / 0.16; oracle filler: 0.0): the twin's P(IO) is steep in everything H7.7 reads, and "
             "its live SAE features carry is-name, inhibition or verb content next to their tokens' codes",
             E3_DEFAULT_SAES),
    # The graded variant (fixtures.planted.mutants.E3_GRADED) passes every E3 row with the oracle; with trained SAEs
    # it passes L6-to and L5-to on SAE seeds 0, 1, 2 and L7 on seeds 0 and 1, each failing on its mutant
    # (tests/test_e3_trained_graded.py, seed 0). What it cannot show with them (thesis prompt; values for seeds
    # 0 / 1 / 2 of `./run claims --model planted:tinystories-8m/e3-graded --sae-seeds 0,1,2` on this project's CPU):
    KnownGap("E3.L5-gave-feature", TS_GRADED, ("verb_share", "attribution_over_runner_up", "H7.7_END_to_IO_after_over_before",
                                               "H6.11_END_to_names_after_over_before"),
             "the top-attribution trained layer-5 feature is a name's own (decoder: name code 0.38, dup 0.31, is_name "
             "0.09; attribution 33.2 / 31.6 / 38.9 with its copies), not the verb's (decoder cosine with verb@5 -0.01 on "
             "each seed): H6.11 and H7.7 read names through key scores of ~16 and ~10, so at first order a name is the "
             "largest lever (is_name at IO +58.9, at S1 -46.9); ablating it collapses H7.7 (keeps 0.003 / 0.002 / 0.002) "
             "and H6.11 (0.26 / 0.27 / 0.25). On the 8 prompts, where the names vary, seeds 0 and 2 find the verb "
             "(cosine 0.985 / 0.987, H7.7 keeps 0.46, lead 1.86 / 2.03) and seed 1 does not. The role being another "
             "feature's, its lead (13.0 / 12.6 / 15.4, passing) is listed too", E3_DEFAULT_SAES),
    KnownGap("E3.L5-infinitive-to", TS_GRADED, ("to_attention_after", "to_attention_after_over_before"),
             "the trained infinitive feature is the whole non-giving ' to' token (decoder cosine with inf@5 0.94 / 0.93 / "
             "0.94, the rest is_to, to_pos and the token's code; the projection removes 0.90 / 0.94 / 0.93 of that "
             "token's residual, the oracle's 0.81), so it takes the later heads' pull to earlier ' to' (to_pos) with "
             "what cancels it: attention to earlier ' to' goes 1.3e-6 -> 4.9e-6 / 2.5e-7 / 3.5e-7 (ratio 3.8 / 0.19 / "
             "0.27: seed 0 passes the ratio row, 'strong' fails on every seed). A 128-wide SAE keeps them apart "
             "(0.83 after)", E3_DEFAULT_SAES),
    KnownGap("E3.L6-negative-names", TS_GRADED, ("attribution", "attribution_over_runner_up", "name_share_top_contexts",
                                                 "distinct_names_top_contexts"),
             "no trained layer-6 feature holds names@6 (best decoder cosine of the role's feature 0.03 / 0.005 / -0.01) "
             "and none has a negative attribution beyond float noise on the thesis prompt (-3e-7 / -0.035 / 0): "
             "names@6 sits in per-name features with the name's own key content, whose positive attribution outweighs "
             "it", E3_DEFAULT_SAES),
    KnownGap("E3.L7-logit-feature", TS_GRADED, ("attribution_over_runner_up", "top_unembed_token_is_io"),
             "seeds 0 and 1 pass (one feature, decoder cosine 0.90 / 0.92 with W_U[:, Mary], all the attribution); on "
             "seed 2 Mary's feature (cosine 0.91) barely fires at END (0.04) and two mixed features reconstruct the write "
             "(attribution 0.41 and 0.21, cosines 0.21 and 0.35): lead 1.9, top unembed token not the IO. As on the twin, "
             "which seeds recover the name write differs by machine", E3_DEFAULT_SAES, seed_dependent=True),
    KnownGap("E3.random-control", TS_GRADED, ("mean_abs_delta_p_io_L5", "mean_abs_delta_p_io_L6"),
             "30 random live trained features move P(IO) by 0.17 / 0.16 / 0.19 (block 5) and 0.55 / 0.61 / 0.52 (block 6) "
             "on average: most live features are position-bucketed copies (decoder cos 0.5-0.9) of planted directions "
             "(at block 5 30 of to@5, 33 of inf@5, 40 of verb@5), and at block 6 to@6 also sits on every token after a "
             "giving verb (the variant's H6.3)", E3_DEFAULT_SAES),
]

# The superposition world (fixtures/planted/superposition.py, issue 29) with its own SAEs (sae_sources.SUPERPOSITION_SAE_CONFIG,
# L1 10, its own corpus): E3.L6-to, L5-to, L5-gave, L5-infinitive-to, L6-negative-names and L7 pass on SAE seeds 0, 1 and 2 and fail on their
# mutants (tests/test_e3_superposition.py). What it cannot show with them yet (thesis prompt, seeds 0 / 1 / 2, this project's CPU):
TS_SUPERPOSITION = "planted:tinystories-8m/e3-superposition"
KNOWN_GAPS += [
    KnownGap("E3.random-control", TS_SUPERPOSITION, ("mean_abs_delta_p_io_L5", "mean_abs_delta_p_io_L6"),
             "30 random live features move P(IO) by 0.034 / 0.019 / 0.010 (block 5; seeds 1 and 2 pass) and 0.097 / 0.112 / "
             "0.142 (block 6) on average. Over every live feature (population_mean_abs_delta_p_io, reported beside the "
             "draw) the means are 0.029 / 0.032 / 0.025 at block 5, so a pass there is the luck of the draw: 42 / 38 / 26 "
             "features move P(IO) by over 0.1, each sharing a role direction or the IO name with its token (the IO name's "
             "own features 0.72, per-verb features holding verb@5 0.67, copies of ' for' after a giving verb holding "
             "to@5 0.60; measured on the previous design, seed 0), one in 25 of a width-1024 SAE. Block 6: 0.104 / 0.098 / "
             "0.107 over all (214-228 features over 0.1); split to first order by planted subspace (seed 0, previous "
             "design): 47% name7 at IO (decoder cosines 0.02-0.07, noise level in 256 dimensions, times H7.7's steep "
             "linear read: P(IO) moves ~3.7 per unit of name7 at IO), 29% to@6 and 11% inhib at END (' to' features "
             "with part of them). H7.7 is the last layer, so nothing after block 6 can saturate its reads",
             E3_DEFAULT_SAES),
]

