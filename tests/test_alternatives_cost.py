"""The cost benchmark's bookkeeping: its section replaces an earlier one of the report, and the grid estimate
adds pre-training and scaled trials, two at a time."""

import pytest

from benchmarks.alternatives_cost import HEADING, grid_estimate
from benchmarks.common import write_section
from benchmarks.run import STANDALONE, section_of


def test_the_section_is_appended_once_then_replaced(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Other\n\nkept\n")
    write_section(path, HEADING, f"{HEADING}\n\nfirst\n")
    assert path.read_text() == f"# Benchmarks\n\n## Other\n\nkept\n\n{HEADING}\n\nfirst\n"
    path.write_text(path.read_text() + "\n## Later\n\nalso kept\n")
    write_section(path, HEADING, f"{HEADING}\n\nsecond\n")
    text = path.read_text()
    assert text.count(HEADING) == 1 and "first" not in text
    assert text.endswith(f"{HEADING}\n\nsecond\n\n## Later\n\nalso kept\n") and "kept\n\n" in text


def test_a_section_goes_before_the_correctness_comparisons_and_is_read_back_whole(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\n## Correctness comparisons\n\nok\n")
    write_section(path, STANDALONE[0], f"{STANDALONE[0]}\n\nfigures\n")
    text = path.read_text()
    assert text == f"# Benchmarks\n\n{STANDALONE[0]}\n\nfigures\n\n## Correctness comparisons\n\nok\n"
    assert section_of(text, STANDALONE[0]) == f"{STANDALONE[0]}\n\nfigures\n\n"
    assert section_of(text, "## Missing") is None


def test_grid_estimate_scales_the_whole_trial_by_each_rows_cpu_time():
    rows = [{"row": "final", "cpu_s": 10.0}, {"row": "EMA(0.999)", "cpu_s": 20.0}]
    full = {"seconds": 100.0, "steps_per_cycle": [5]}
    # 2 rows x 3 repeats: per repeat 50 + 100 s of trials and 30 s of pre-training, two at a time.
    assert grid_estimate(rows, full, pretrain_seconds=30.0, trials=6) == pytest.approx((3 * 30 + 3 * 150) / 2)
