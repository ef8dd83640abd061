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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

METRICS = ("R1", "R5", "R10", "mAP", "mINP")
TABLE_KEYS = ("id", "title", "metrics", "rows", "published", "claims", "k_evidence")
ROW_KEYS = ("variant", "label", "reference", "paper")
CLAIM_KEYS = ("text", "variant", "over", "metric", "margin")
CONFIDENCE = 0.95


class TableError(ValueError):
    """A table declaration problem, phrased as one line that names the key and the fix."""


@dataclass(frozen=True)
class Row:
    variant: str
    label: str
    reference: str | None = None
    paper: dict[str, dict[str, float | None]] = field(default_factory=dict)  # column -> metric -> value


@dataclass(frozen=True)
class Claim:
    text: str
    variant: str
    over: str
    metric: str = "mAP"
    margin: float = 0.0


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    metrics: tuple[str, ...]
    rows: tuple[Row, ...]
    published: tuple[Row, ...] = ()  # other methods' printed values only (variant is empty)
    claims: tuple[Claim, ...] = ()
    k_evidence: bool = False  # show DBSCAN clusters against K per cycle (the ULA class-count table)


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
        return "–"
    sign = "+" if signed else ""
    text = f"{value.mean:{sign}.{digits}f}"
    if value.n > 1:
        text += f" ± {value.half_width:.{digits}f}"
    return text


# ---------------------------------------------------------------- declarations

def parse_tables(raw: Any, variants: list[str]) -> list[Table]:
    """Tables from a space file's ``tables`` list; every variant they name must be one of ``variants``."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TableError("tables must be a list of {id, title, rows, ...} mappings")
    tables: list[Table] = []
    for index, item in enumerate(raw):
        where = f"tables[{index}]"
        _check_keys(item, TABLE_KEYS, where, required=("id", "title", "rows"))
        where = f"tables[{index}] ({item['id']})"
        metrics = tuple(item.get("metrics", ("R1", "mAP")))
        unknown = [m for m in metrics if m not in METRICS]
        if unknown or not metrics:
            raise TableError(f"{where}: metrics {list(metrics)} must be a non-empty subset of {', '.join(METRICS)}")
        rows = tuple(_row(r, f"{where}.rows[{i}]", variants, metrics) for i, r in enumerate(_list(item, "rows", where)))
        published = tuple(_published(r, f"{where}.published[{i}]", metrics)
                          for i, r in enumerate(item.get("published") or []))
        names = [row.variant for row in rows]
        for row in rows:
            if row.reference is not None and row.reference not in variants:
                raise TableError(f"{where}: row {row.variant!r} refers to {row.reference!r}, which is not a variant "
                                 f"of this space: use one of {', '.join(variants)}")
        claims = tuple(_claim(c, f"{where}.claims[{i}]", variants, metrics)
                       for i, c in enumerate(item.get("claims") or []))
        if len(set(names)) != len(names):
            raise TableError(f"{where}: a variant appears twice in rows: list each once")
        if any(t.id == item["id"] for t in tables):
            raise TableError(f"{where}: table id {item['id']!r} is used twice: ids must be unique")
        tables.append(Table(str(item["id"]), str(item["title"]), metrics, rows, published, claims,
                            bool(item.get("k_evidence", False))))
    return tables


def _row(raw: Any, where: str, variants: list[str], metrics: tuple[str, ...]) -> Row:
    _check_keys(raw, ROW_KEYS, where, required=("variant",))
    variant = str(raw["variant"])
    if variant not in variants:
        raise TableError(f"{where}: variant {variant!r} is not in this space's variants: add it under variants or "
                         f"use one of {', '.join(variants)}")
    return Row(variant, str(raw.get("label", variant)), raw.get("reference"), _paper(raw.get("paper"), where, metrics))


def _published(raw: Any, where: str, metrics: tuple[str, ...]) -> Row:
    _check_keys(raw, ("label", "paper"), where, required=("label", "paper"))
    return Row("", str(raw["label"]), None, _paper(raw["paper"], where, metrics))


def _paper(raw: Any, where: str, metrics: tuple[str, ...]) -> dict[str, dict[str, float | None]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise TableError(f"{where}.paper must map a column (D->M, M->D) to {{metric: value}}")
    out = {}
    for column, values in raw.items():
        if not isinstance(values, dict) or any(k not in metrics for k in values):
            raise TableError(f"{where}.paper.{column}: give values for the table's metrics {', '.join(metrics)}")
        if any(v is not None and not isinstance(v, (int, float)) for v in values.values()):
            raise TableError(f"{where}.paper.{column}: values must be numbers (or null where the paper prints '-')")
        out[str(column)] = {k: (None if v is None else float(v)) for k, v in values.items()}
    return out


def _claim(raw: Any, where: str, variants: list[str], metrics: tuple[str, ...]) -> Claim:
    _check_keys(raw, CLAIM_KEYS, where, required=("text", "variant", "over"))
    for key in ("variant", "over"):
        if raw[key] not in variants:
            raise TableError(f"{where}: {key} {raw[key]!r} is not a variant of this space: use one of "
                             f"{', '.join(variants)}")
    metric = raw.get("metric", "mAP")
    if metric not in METRICS:
        raise TableError(f"{where}: metric {metric!r} is not one of {', '.join(METRICS)}")
    margin = raw.get("margin", 0.0)
    if not isinstance(margin, (int, float)) or isinstance(margin, bool):
        raise TableError(f"{where}: margin must be a number of metric points, got {margin!r}")
    return Claim(str(raw["text"]), str(raw["variant"]), str(raw["over"]), metric, float(margin))


def _check_keys(raw: Any, allowed: tuple[str, ...], where: str, required: tuple[str, ...]) -> None:
    if not isinstance(raw, dict):
        raise TableError(f"{where} must be a mapping with keys {', '.join(allowed)}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise TableError(f"{where}: unknown key(s) {unknown}: use {', '.join(allowed)}")
    missing = [key for key in required if key not in raw]
    if missing:
        raise TableError(f"{where}: missing {', '.join(missing)}")


def _list(item: dict, key: str, where: str) -> list:
    value = item.get(key)
    if not isinstance(value, list) or not value:
        raise TableError(f"{where}: {key} must be a non-empty list")
    return value


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
    return sorted(present, key=lambda c: ({"D->M": 0, "M->D": 1}.get(c, 2), c))


def primary_metric(table: Table) -> str:
    return "mAP" if "mAP" in table.metrics else table.metrics[-1]


def table_records(table: Table, trials, which: str = "final") -> list[dict[str, Any]]:
    """One record per row: per column and metric the interval, the paper's value and the paired difference."""
    records = []
    primary = primary_metric(table)
    for row in table.rows + table.published:
        record: dict[str, Any] = {"label": row.label, "variant": row.variant}
        for column in columns_of(trials):
            for metric in table.metrics:
                key = f"{which}_target_{metric}"
                ours = interval(seed_values(trials, row.variant, column, key).values()) if row.variant else None
                record[(column, metric)] = ours
                record[(column, metric, "paper")] = row.paper.get(column, {}).get(metric)
            if row.variant and row.reference:
                key = f"{which}_target_{primary}"
                record[(column, "diff")] = paired(seed_values(trials, row.variant, column, key),
                                                  seed_values(trials, row.reference, column, key))
        records.append(record)
    return records


def markdown_frame(frame) -> str:
    """Cells are already formatted text: pandas must not re-parse them as numbers, and a '|' inside one (a
    trial name such as 'mu=0.5 | D->M | seed 0') must not split it into two columns."""
    escaped = frame.apply(lambda column: column.map(
        lambda text: text.replace("|", "\\|") if isinstance(text, str) else text))
    return escaped.to_markdown(index=False, disable_numparse=True)


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
                line[f"{column} {metric} paper"] = "–" if paper is None else f"{paper:.1f}"
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
