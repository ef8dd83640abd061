"""The Markdown report of a study, rebuilt from MLflow alone: the paper's tables beside ours, CSVs, plots.

A trial's metric is shown two ways, always labelled: its final cycle (what the method delivers without a
target-domain oracle) and its best cycle by target mAP (what early stopping with labels would give; the
paper's Fig. 6 shows mAP falling after a peak). Several trials of one table cell (seeds) are averaged and
their count is shown. The best-trials table and parameter importances are written for any study with
finished cycles (for an ablation grid they rank the variants).

``load`` reads the runs into frames, ``sections`` writes the Markdown, ``plots`` the figures (Optuna's where
an Optuna study holds the trials, see ``optuna_view``), ``validators`` the validator benchmark (also across
studies: ``python -m study.validators``).

    python -m study.report --study NAME [--results-dir DIR] [--tracking-uri URI] [--optuna-storage URI]
"""
