"""Leaderboard: strict result validation, re-scoring of submissions, the paper's reported rows,
bootstrap statistics, and the Markdown + static HTML renderings.

Modules: :mod:`.schema` (validation), :mod:`.verify` (re-score and trust), :mod:`.reference` (the
paper's Table 4), :mod:`.stats` (bootstrap CIs, paired tests), :mod:`.board` (collecting entries),
:mod:`.render_md` and :mod:`.render_html` (outputs).
"""
