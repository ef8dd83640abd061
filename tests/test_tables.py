"""Statistics of the declared tables: Student-t intervals, paired differences and verdicts by hand."""

import math

import pandas as pd
import pytest

from study.tables import TableError, interval, paired, parse_tables, verdict

T95 = {1: 12.706204736, 2: 4.302652730}  # Student t, 97.5% quantile, by degrees of freedom


def test_interval_is_mean_and_t_half_width():
    values = [60.0, 62.0, 67.0]
    mean = 63.0
    sd = math.sqrt(((60 - 63) ** 2 + (62 - 63) ** 2 + (67 - 63) ** 2) / 2)  # sqrt(13)
    result = interval(values)
    assert result.mean == pytest.approx(mean) and result.n == 3
    assert result.half_width == pytest.approx(T95[2] * sd / math.sqrt(3))
    one = interval([55.0, float("nan")])  # NaN (a missing metric) is left out
    assert (one.mean, one.n) == (55.0, 1) and math.isnan(one.half_width)


def test_paired_difference_uses_only_common_seeds():
    result = paired({0: 61.0, 1: 63.0, 2: 70.0}, {0: 60.0, 1: 60.0, 5: 10.0})
    assert result.n == 2 and result.mean == pytest.approx(2.0)  # diffs 1 and 3
    assert result.half_width == pytest.approx(T95[1] * math.sqrt(2.0) / math.sqrt(2))


def test_verdicts():
    assert verdict(paired({0: 5.0, 1: 6.0, 2: 5.5}, {0: 1.0, 1: 1.0, 2: 1.0})) == "reproduced"
    assert verdict(paired({0: 1.0, 1: 1.0, 2: 1.0}, {0: 5.0, 1: 6.0, 2: 5.5})) == "refuted"
    assert verdict(paired({0: 1.0, 1: 3.0, 2: 2.0}, {0: 2.0, 1: 2.0, 2: 2.0})) == "not significant"
    assert verdict(paired({0: 9.0}, {0: 1.0})) == "not significant"  # one seed proves nothing
    assert verdict(paired({0: 14.0, 1: 15.0, 2: 14.5}, {0: 1.0, 1: 1.0, 2: 1.0}), margin=10) == "reproduced"
    assert verdict(paired({0: 4.0, 1: 5.0, 2: 4.5}, {0: 1.0, 1: 1.0, 2: 1.0}), margin=10) == "refuted"


def test_table_markdown_and_claims_from_trials():
    from study.tables import claim_lines, table_markdown

    tables = parse_tables([{"id": "t", "title": "T", "metrics": ["mAP"],
                            "rows": [{"variant": "a", "label": "A", "paper": {"D->M": {"mAP": 30.0}}},
                                     {"variant": "b", "label": "B", "reference": "a"}],
                            "claims": [{"text": "B beats A", "variant": "b", "over": "a"}]}], ["a", "b"])
    trials = pd.DataFrame([
        {"variant": v, "column": "D->M", "seed": seed, "cycles": 3, "final_target_mAP": value}
        for v, values in {"a": [50.0, 52.0, 51.0], "b": [55.0, 58.0, 55.0]}.items()
        for seed, value in enumerate(values)
    ])
    text = table_markdown(tables[0], trials)
    assert "51.0 ± 2.5" in text and "30.0" in text  # sd 1, t(2) 4.30 / sqrt(3)
    assert "+5.0 ± 2.5 vs a" in text  # diffs 5, 6, 4
    assert claim_lines(tables[0], trials) == ["- B beats A: D->M: **reproduced**, +5.0 ± 2.5 mAP (n=3)"]


@pytest.mark.parametrize(
    "raw, message",
    [
        ([{"id": "t", "title": "T", "rows": [{"variant": "x"}]}], "variant 'x' is not in this space's variants"),
        ([{"id": "t", "title": "T", "rows": [{"variant": "a", "colour": 1}]}], "unknown key 'tables[0].rows[0].colour'"),
        ([{"id": "t", "rows": [{"variant": "a"}]}], "tables[0].title is missing"),
        ([{"id": "t", "title": "T", "rows": [{"variant": "a", "paper": {"D->M": {"mAP": "high"}}}]}],
         "mAP='high' is not a number"),
        ([{"id": "t", "title": "T", "rows": [{"variant": "a"}, {"variant": "a"}]}], "appears twice"),
    ],
)
def test_bad_declarations(raw, message):
    with pytest.raises(TableError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        parse_tables(raw, ["a", "b"])


def test_a_pipe_inside_a_cell_stays_in_its_column():
    import pandas as pd

    from study.tables import markdown_frame

    text = markdown_frame(pd.DataFrame([{"method": "mu=0.5 | D->M | seed 0", "mAP": "51.4 ± 2.0"}]))
    row = text.splitlines()[2]
    assert row.replace("\\|", "").count("|") == 3 and "mu=0.5 \\| D->M \\| seed 0" in row
