"""Tables a grid space declares, and the statistics that fill them.

A table lists rows (a variant of the space, its printed label, the paper's values where it printed any,
and the row it is compared with) and the paper's claims about them. Every cell is a mean over seeds with
the half-width of its 95% Student-t interval; a row against its reference, and a claim, is the paired
difference over the seeds both ran. A claim is *reproduced* when that interval lies wholly above its
margin (0 unless stated), *refuted* when it lies wholly below, and *not significant* otherwise: with one
seed nothing is significant, which is the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, Field, ValidationError, model_validator
from scipy import stats

from reidmodel.cycle_metrics import EVAL_KEYS, MISSING
from reidmodel.schema import Settings, Text, error_line

METRICS = EVAL_KEYS  # a table's metrics: the evaluation's, target domain
COLUMNS = ("D->M", "M->D")  # the paper's two directions: into a Market-like target, and any other
CONFIDENCE = 0.95
TableMetric = Literal[METRICS]
# column -> metric -> the value the paper prints, null where it prints none
PaperValues = dict[Literal[COLUMNS], dict[TableMetric, float | None]]


class TableError(ValueError):
    """A table declaration problem, phrased as one line that names the key and the fix."""


class Row(Settings):
    variant: Text = Field(description="a variant of this space")
    label: Text | None = Field(None, description="the row's printed name; null: the variant's name")
    reference: Text | None = Field(None, description="the variant this row's paired difference over seeds is "
                                                     "against")
    paper: PaperValues = Field(default_factory=dict, description="the paper's values: {D->M: {R1: 31.8, mAP: 20.1}}")

    @model_validator(mode="after")
    def _labelled(self) -> Row:
        self.label = self.label or self.variant
        return self


class PublishedRow(Settings):
    label: Text = Field(description="another method's name")
    paper: PaperValues = Field(description="its printed values, shown beside ours")


class Claim(Settings):
    text: Text = Field(description="the paper's claim, as the report prints it")
    variant: Text = Field(description="the variant claimed better")
    over: Text = Field(description="the variant it is claimed better than")
    metric: TableMetric = Field("mAP", description="compared on this target metric")
    margin: float = Field(0.0, description="reproduced only when better by more than this many metric points")


class Table(Settings):
    """A report table: judged per direction, reproduced / not significant / refuted."""

    id: Text = Field(description="unique; also the CSV's name: <id>.csv")
    title: Text = Field(description="the table's heading")
    metrics: list[TableMetric] = Field(default_factory=lambda: ["R1", "mAP"], description="its columns")
    rows: list[Row] = Field(min_length=1, description="variants of this space, each once")
    published: list[PublishedRow] = Field(default_factory=list, description="other methods' printed values")
    claims: list[Claim] = Field(default_factory=list, description="the paper's claims about its rows")
    k_evidence: bool = Field(False, description="show DBSCAN clusters against K per cycle, and whether K bound")

    @model_validator(mode="before")
    @classmethod
    def _known_metrics(cls, raw: Any) -> Any:
        metrics = raw.get("metrics", []) if isinstance(raw, dict) else []
        if not isinstance(metrics, list) or "metrics" in raw and (not metrics or set(metrics) - set(METRICS)):
            raise ValueError(f"metrics {metrics} must be a non-empty subset of {', '.join(METRICS)}")
        return raw

    @model_validator(mode="after")
    def _consistent(self) -> Table:
        names = [row.variant for row in self.rows]
        if len(set(names)) != len(names):
            raise ValueError("a variant appears twice in rows: list each once")
        for row in [*self.rows, *self.published]:
            if any(set(values) - set(self.metrics) for values in row.paper.values()):
                raise ValueError(f"row {row.label!r}: give paper values for the table's metrics "
                                 f"{', '.join(self.metrics)} only")
        return self


def _unique_ids(tables: list[Table]) -> list[Table]:
    ids = [table.id for table in tables]
    for table in tables:
        if ids.count(table.id) > 1:
            raise ValueError(f"table id {table.id!r} is used twice: ids must be unique")
    return tables


Tables = Annotated[list[Table], AfterValidator(_unique_ids)]


def check_variants(tables: list[Table], variants: list[str]) -> None:
    """Every variant a table names must be one of the space's ``variants``; raises ValueError with one line."""
    known = ", ".join(variants)
    for index, table in enumerate(tables):
        where = f"tables[{index}] ({table.id})"
        for number, row in enumerate(table.rows):
            if row.variant not in variants:
                raise ValueError(f"{where}.rows[{number}]: variant {row.variant!r} is not in this space's variants: "
                                 f"add it under variants or use one of {known}")
            if row.reference is not None and row.reference not in variants:
                raise ValueError(f"{where}: row {row.variant!r} refers to {row.reference!r}, which is not a variant "
                                 f"of this space: use one of {known}")
        for number, claim in enumerate(table.claims):
            for key in ("variant", "over"):
                if getattr(claim, key) not in variants:
                    raise ValueError(f"{where}.claims[{number}]: {key} {getattr(claim, key)!r} is not a variant of "
                                     f"this space: use one of {known}")


class _Declared(Settings):
    tables: Tables


def parse_tables(raw: Any, variants: list[str]) -> list[Table]:
    """Tables as a space declares them (a logged space's ``tables``); every variant they name must be one of
    ``variants``."""
    try:
        tables = _Declared.model_validate({"tables": raw or []}).tables
        check_variants(tables, variants)
    except ValidationError as exc:
        raise TableError(error_line(exc, _Declared)) from None
    except ValueError as exc:
        raise TableError(str(exc)) from None
    return tables


@dataclass(frozen=True)
class Interval:
    mean: float
    half_width: float  # NaN when n < 2
    n: int

    def significant_above(self, margin: float = 0.0) -> bool:
        return self.n > 1 and self.mean - self.half_width > margin

    def significant_below(self, margin: float = 0.0) -> bool:
        return self.n > 1 and self.mean + self.half_width < margin


def interval(values) -> Interval:
    """Mean and 95% Student-t half-width of the finite values."""
    data = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if len(data) == 0:
        return Interval(math.nan, math.nan, 0)
    if len(data) == 1:
        return Interval(float(data[0]), math.nan, 1)
    sem = data.std(ddof=1) / math.sqrt(len(data))
    return Interval(float(data.mean()), float(stats.t.ppf(0.5 + CONFIDENCE / 2, len(data) - 1) * sem), len(data))


def paired(values: dict[Any, float], reference: dict[Any, float]) -> Interval:
    """The difference ``values - reference`` over the seeds both hold."""
    common = sorted(set(values) & set(reference))
    return interval([values[seed] - reference[seed] for seed in common])


def verdict(difference: Interval, margin: float = 0.0) -> str:
    if difference.significant_above(margin):
        return "reproduced"
    if difference.significant_below(margin):
        return "refuted"
    return "not significant"


def format_interval(value: Interval, digits: int = 1, signed: bool = False) -> str:
    if value.n == 0:
        return MISSING
    sign = "+" if signed else ""
    text = f"{value.mean:{sign}.{digits}f}"
    if value.n > 1:
        text += f" ± {value.half_width:.{digits}f}"
    return text


# ---------------------------------------------------------------- filling a table from the trials

def seed_values(trials, variant: str, column: str, key: str) -> dict[Any, float]:
    """seed -> value of ``key`` for the finished trials of one cell (trials without cycles are left out)."""
    cell = trials[(trials["variant"] == variant) & (trials["column"] == column) & (trials["cycles"] > 0)]
    if key not in cell:
        return {}
    return {seed: float(value) for seed, value in zip(cell["seed"], cell[key], strict=True)}


def columns_of(trials) -> list[str]:
    """The direction columns present, D->M and M->D first."""
    present = [c for c in trials["column"].dropna().unique()]
    return sorted(present, key=lambda c: (COLUMNS.index(c) if c in COLUMNS else len(COLUMNS), c))


def primary_metric(table: Table) -> str:
    return "mAP" if "mAP" in table.metrics else table.metrics[-1]


def table_records(table: Table, trials, which: str = "final") -> list[dict[str, Any]]:
    """One record per row: per column and metric the interval, the paper's value and the paired difference."""
    records = []
    primary = primary_metric(table)
    for row in [*table.rows, *table.published]:
        variant = getattr(row, "variant", "")  # a published row is another method's: no trial of ours
        record: dict[str, Any] = {"label": row.label, "variant": variant}
        for column in columns_of(trials):
            for metric in table.metrics:
                key = f"{which}_target_{metric}"
                ours = interval(seed_values(trials, variant, column, key).values()) if variant else None
                record[(column, metric)] = ours
                record[(column, metric, "paper")] = row.paper.get(column, {}).get(metric)
            if variant and row.reference:
                key = f"{which}_target_{primary}"
                record[(column, "diff")] = paired(seed_values(trials, variant, column, key),
                                                  seed_values(trials, row.reference, column, key))
        records.append(record)
    return records


def markdown_frame(frame) -> str:
    """Cells are already formatted text: pandas must not re-parse them as numbers, and a '|' inside one (a
    trial name such as 'mu=0.5 | D->M | seed 0') must not split it into two columns."""
    escaped = frame.apply(lambda column: column.map(
        lambda text: text.replace("|", "\\|") if isinstance(text, str) else text))
    return escaped.to_markdown(index=False, disable_numparse=True)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    import pandas as pd

    return markdown_frame(pd.DataFrame(rows, columns=header))


def table_markdown(table: Table, trials, which: str = "final") -> str:
    import pandas as pd

    primary = primary_metric(table)
    references = {row.variant: row.reference for row in table.rows}
    out = []
    for record in table_records(table, trials, which):
        line = {"method": record["label"]}
        for column in columns_of(trials):
            first = record.get((column, table.metrics[0]))
            line[f"{column} n"] = "" if first is None else str(first.n)
            for metric in table.metrics:
                ours = record[(column, metric)]
                paper = record[(column, metric, "paper")]
                line[f"{column} {metric}"] = "" if ours is None else format_interval(ours)
                line[f"{column} {metric} paper"] = MISSING if paper is None else f"{paper:.1f}"
            diff = record.get((column, "diff"))
            label = f"{column} Δ{primary} vs ref"
            if diff is None:
                line[label] = ""
            else:
                mark = "" if diff.significant_above() or diff.significant_below() else " (n.s.)"
                line[label] = f"{format_interval(diff, signed=True)}{mark} vs {references[record['variant']]}"
        out.append(line)
    return markdown_frame(pd.DataFrame(out))


def claim_lines(table: Table, trials, which: str = "final") -> list[str]:
    """One line per claim: its verdict in each direction, with the paired difference it rests on."""
    lines = []
    for claim in table.claims:
        key = f"{which}_target_{claim.metric}"
        parts = []
        for column in columns_of(trials):
            diff = paired(seed_values(trials, claim.variant, column, key), seed_values(trials, claim.over, column, key))
            if diff.n == 0:
                parts.append(f"{column}: not run")
                continue
            parts.append(f"{column}: **{verdict(diff, claim.margin)}**, {format_interval(diff, signed=True)} "
                         f"{claim.metric} (n={diff.n})")
        margin = f" (by more than {claim.margin:g} {claim.metric})" if claim.margin else ""
        lines.append(f"- {claim.text}{margin}: " + "; ".join(parts))
    return lines


def table_csv_frame(table: Table, trials, which: str = "final"):
    """The table as flat columns (mean, half-width, n, paper, paired difference) for a CSV."""
    import pandas as pd

    rows = []
    for record in table_records(table, trials, which):
        flat: dict[str, Any] = {"label": record["label"], "variant": record["variant"]}
        for key, value in record.items():
            if not isinstance(key, tuple):
                continue
            name = " ".join(key)
            if isinstance(value, Interval):
                flat.update({f"{name} mean": value.mean, f"{name} ci95": value.half_width, f"{name} n": value.n})
            else:
                flat[name] = value
        rows.append(flat)
    return pd.DataFrame(rows)
