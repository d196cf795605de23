"""Every head the thesis names (and the literature heads it compares with), once, as mechinterp.heads.Head."""

from mechinterp.heads import Head

# TinyStories-8M (thesis s3.3-3.5)
NAME_MOVER_TS8M = Head(7, 7)
SECONDARY_NAME_MOVER_TS8M = Head(6, 11)
S_INHIBITION_TS8M = Head(5, 7)
DUPLICATE_HEAD_TS8M = Head(4, 0)
# GPT-2 small (thesis s3.3-3.4; Wang et al. 2022 where marked)
PREVIOUS_TOKEN_HEAD_GPT2 = Head(4, 11)
THESIS_DUPLICATE_HEADS_GPT2 = [Head(3, 0), Head(0, 5)]  # thesis s3.3, fig 3.6
LITERATURE_DUPLICATE_HEADS_GPT2 = [Head(0, 1), Head(0, 10), Head(3, 0)]  # Wang et al. 2022, fig 2
LITERATURE_INDUCTION_HEADS_GPT2 = [Head(5, 5), Head(6, 9)]
NAME_MOVERS_GPT2 = [Head(9, 9), Head(9, 6)]
S_INHIBITION_GPT2 = Head(8, 6)
NEGATIVE_NAME_MOVERS_GPT2 = [Head(10, 7), Head(11, 10)]  # Wang et al. 2022
