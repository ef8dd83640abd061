"""Faults and bad inputs injected on tiny data (issue 10); ``python -m tests.reliability.catalogue`` runs them all
and writes results/reliability.md."""
