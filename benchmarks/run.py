"""The benchmark suite: what a user with the real datasets meets every cycle, measured.

    python -m benchmarks.run                       # everything, full sizes; writes results/benchmarks.md
    python -m benchmarks.run --quick               # small sizes, well under a minute: the correctness checks
    python -m benchmarks.run --skip synthetic data # leave out the slow calibration and the data-loader report
    python -m benchmarks.run --only evaluation     # one part

Parts: evaluation, clustering (ULA Jaccard / Euclidean + DBSCAN), rerank, growth (with N, plus a log-log
plot), training (throughput against a bare loop), studies (smoke twice, with and without the
pre-training cache; ablation read from its report), data (results/data_throughput.md) and synthetic
(results/synthetic_benchmark.md, tens of minutes). Each figure is the median of --repeats runs in a child
process that reports its own peak RSS; reference implementations run side by side in the same child.
The exit status is 1 when a correctness comparison fails (times are reported, never asserted).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import (
    alternatives_cost,
    data_throughput,
    paper_cost,
    scale,
    studies,
    synthetic_benchmark,
    training,
)
from benchmarks import validators as validators_cost
from benchmarks.common import in_child, load_average, machine, section_of, with_section

PARTS = ("evaluation", "clustering", "rerank", "growth", "training", "studies", "data", "synthetic", "paper")
# Sections of the report that benchmarks run on their own write; a run of this suite keeps them as they are.
STANDALONE = (validators_cost.SECTION, alternatives_cost.HEADING)
QUICK_SKIPS = ("data", "synthetic", "paper")  # whole epochs, whole experiments, ResNet-50 steps: no small version


@dataclass
class Context:
    quick: bool
    repeats: int
    threads: int
    out_dir: str
    studies_dir: str
    previous_max: int
    checks: list = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append((name, bool(passed), detail))
        print(f"  [{'pass' if passed else 'FAIL'}] {name} {detail}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (the CI check); prints, writes only --out")
    parser.add_argument("--only", nargs="+", choices=PARTS, metavar="PART", help=f"run only these: {', '.join(PARTS)}")
    parser.add_argument("--skip", nargs="+", choices=PARTS, default=[], metavar="PART", help="leave these out")
    parser.add_argument("--repeats", type=int, help="runs per figure, the median is reported (default 3; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every measurement (default 2)")
    parser.add_argument("--out", type=Path, help="report path (default results/benchmarks.md; none with --quick)")
    parser.add_argument("--studies-dir", default="results", help="where a finished ablation study's report is read")
    parser.add_argument("--previous-max", type=int, default=8192,
                        help="largest N at which the previous dense code runs in the growth series (memory ~N^2)")
    args = parser.parse_args(argv)
    out = args.out if args.out is not None or args.quick else Path("results/benchmarks.md")
    parts = [p for p in (args.only or PARTS) if p not in args.skip and not (args.quick and not args.only
                                                                              and p in QUICK_SKIPS)]
    ctx = Context(quick=args.quick, repeats=args.repeats or (1 if args.quick else 3), threads=args.threads,
                  out_dir=str(out.parent if out else Path("results")), studies_dir=args.studies_dir,
                  previous_max=args.previous_max)
    command = "python -m benchmarks.run" + ("" if argv is None and len(sys.argv) <= 1 else
                                            " " + shlex.join(sys.argv[1:] if argv is None else argv))
    started, load_before, wall = datetime.now(timezone.utc), load_average(), time.perf_counter()
    results = {}
    for part in parts:
        print(f"== {part}", flush=True)
        start = time.perf_counter()
        if part in ("data", "synthetic", "paper"):
            module = {"data": data_throughput, "synthetic": synthetic_benchmark, "paper": paper_cost}[part]
            results[part] = in_child(_module_part, module.__name__, ctx, threads=ctx.threads)
        else:
            results[part] = PART_FUNCTIONS[part](ctx)
        print(f"   {part}: {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - wall
    header = {"command": command, "started": started.strftime("%Y-%m-%d %H:%M UTC"), "wall": wall,
              "load_before": load_before, "load_after": load_average(), "machine": machine(), "ctx": ctx,
              "parts": parts, "left_out": [p for p in PARTS if p not in parts]}
    text = report(results, header)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if "growth" in results:
            scale.plot_growth(results["growth"]["rows"], out.parent / "benchmark_growth.png")
        previous = out.read_text() if out.exists() else ""
        for heading in STANDALONE:  # a section another benchmark writes: this run does not measure it
            kept = section_of(previous, heading)
            text = text if kept is None else with_section(text, heading, kept)
        out.write_text(text)
        print(f"written: {out}")
    failed = [name for name, passed, _ in ctx.checks if not passed]
    if failed:
        print(f"{len(failed)} correctness comparison(s) failed: {'; '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _module_part(module_name: str, ctx: Context) -> dict:
    import importlib

    return importlib.import_module(module_name).part(ctx)


PART_FUNCTIONS = {
    "evaluation": scale.evaluation,
    "clustering": scale.clustering,
    "rerank": scale.rerank,
    "growth": scale.growth,
    "training": training.training,
    "studies": studies.studies,
}


# --- the report -----------------------------------------------------------------------------------


def _s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"


def _mb(mb: float) -> str:
    return f"{mb / 1024:.2f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _met(value: bool, quick: bool) -> str:
    return "n/a (--quick sizes)" if quick else ("**yes**" if value else "**no**")


def report(results: dict, header: dict) -> str:
    ctx, m = header["ctx"], header["machine"]
    lines = [
        "# Benchmarks: real-dataset scale",
        "",
        f"Regenerated by `{header['command']}` on {header['started']}; wall time {header['wall'] / 60:.1f} min.",
        "",
        f"- Parts: {', '.join(header['parts'])}"
        + (f"; not run here: {', '.join(header['left_out'])} (`python -m benchmarks.run --only "
           f"{' '.join(header['left_out'])}`)." if header["left_out"] else "."),
        f"- Machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gb']:.0f} GB RAM, {m['platform']}; torch threads "
        f"{ctx.threads} in every measurement. Load average (1, 5, 15 min) {header['load_before']} at the start, "
        f"{header['load_after']} at the end (other work on the machine slows the figures down).",
        f"- Python {m['python']}, torch {m['torch']} ({m['blas']}), NumPy {m['numpy']}, SciPy {m['scipy']}, "
        f"scikit-learn {m['scikit-learn']}. CPU only.",
        f"- Times: median of {ctx.repeats} runs. Memory: peak RSS of the child process that made the measurement "
        "(getrusage RUSAGE_SELF in the child; children are forked from a server that only imported the libraries, "
        "so every peak includes about 0.4 GB of interpreter and libraries). *Beyond the features* is that peak "
        "minus the RSS once the input features exist.",
        "- Data: random 2048-d features shaped like the real sets: identity centre + camera bias + noise "
        "(`benchmarks/common.py`), sizes as torchreid loads them. *Previous* = the code before this change "
        "(`benchmarks/previous.py`, verbatim from commit dcbab9a), run in the same child on the same data.",
    ]
    if ctx.quick:
        lines += ["", "**--quick: small sizes; the targets below are for the full sizes and are not judged.**"]
    if {"evaluation", "clustering", "rerank"} & results.keys():
        lines += ["", "## Against the targets (issue 9)", ""] + _summary(results, ctx.quick)
    sections = {"evaluation": _evaluation, "clustering": _clustering, "rerank": _rerank, "growth": _growth,
                "training": _training, "studies": _studies, "data": _data, "synthetic": _synthetic,
                "paper": _paper}
    for part, result in results.items():
        lines += [""] + sections[part](result, ctx)
    lines += ["", "## Correctness comparisons", ""]
    lines += _table(["comparison", "result", "detail"],
                    [[name, "pass" if ok else "**FAIL**", detail] for name, ok, detail in ctx.checks])
    lines += ["", PROFILE_NOTES]
    return "\n".join(lines) + "\n"


def _summary(results: dict, quick: bool) -> list[str]:
    rows = []
    if "evaluation" in results:
        e = results["evaluation"]
        market, msmt, r = e["market"], e["msmt"], e["market_ratios"]
        size = f"{market.num_query} x {market.num_gallery}"
        rows.append(["evaluation end to end (`evaluate_features`)", size, "6.6 s (2.0 s distance + 4.6 s ranking)",
                     _s(e["market_e2e"]["seconds"]), "< 3 s", _met(e["market_e2e"]["seconds"] < 3, quick)])
        loop_ratio = r["loop_seconds"] / r["rank_seconds"]
        rows.append(["ranking vs a plain per-query NumPy loop", size, "1.1x", f"{loop_ratio:.1f}x", ">= 2.5x",
                     _met(loop_ratio >= 2.5, quick)])
        classic_ratio = r["classic_seconds"] / r["rank_few_seconds"]
        rows.append(["ranking vs torchreid's classic Python loop", f"{r['classic_queries']} x {market.num_gallery}",
                     "about 14x", f"{classic_ratio:.0f}x", ">= 30x", _met(classic_ratio >= 30, quick)])
        mm = e["msmt_e2e"]
        rows.append(["evaluation end to end", f"{msmt.num_query} x {msmt.num_gallery}",
                     "not run (the float32 matrix alone is 3.8 GB)",
                     f"{_s(mm['seconds'])}, {_mb(mm['beyond_features_mb'])} beyond the features",
                     "< 60 s, < 2 GB beyond the features",
                     _met(mm["seconds"] < 60 and mm["beyond_features_mb"] < 2048, quick)])
    if "clustering" in results:
        c = results["clustering"]
        for key, size, before, limit, peak_limit in (
            ("market_jaccard", c["market"].num_images, "23 s", 10, None),
            ("msmt_jaccard", c["msmt"].num_images, "178 s, peak RSS 14 GB", 45, 3 * 1024),
            ("market_euclidean", c["market"].num_images, "4.7 s", 3, None),
        ):
            found = c[key]
            now = _s(found["seconds"]) + (f", peak RSS {_mb(found['peak_rss_mb'])}" if peak_limit else "")
            target = f"< {limit} s" + (f", peak < {peak_limit // 1024} GB" if peak_limit else "")
            met = found["seconds"] < limit and (peak_limit is None or found["peak_rss_mb"] < peak_limit)
            label = "ULA Jaccard distance + DBSCAN" if "jaccard" in key else "ULA Euclidean + DBSCAN"
            rows.append([label, f"{size} train images", before, now, target, _met(met, quick)])
    if "rerank" in results:
        rr = results["rerank"]
        found, market = rr["market_rerank"], rr["market"]
        rows.append(["k-reciprocal re-ranking (`eval.rerank`)", f"{market.num_query} x {market.num_gallery}",
                     "45 s, peak RSS 6.4 GB", f"{_s(found['seconds'])}, peak RSS {_mb(found['peak_rss_mb'])}",
                     "< 30 s, peak < 3 GB", _met(found["seconds"] < 30 and found["peak_rss_mb"] < 3072, quick)])
    return _table(["step", "size", "before (issue's figure)", "now", "target (2 cores)", "met"], rows)


def _evaluation(e: dict, ctx) -> list[str]:
    lines = ["## Evaluation (CMC, mAP, mINP; Market protocol)", ""]
    rows = []
    for key, split in (("market", e["market"]), ("msmt", e["msmt"])):
        r, full = e[f"{key}_ratios"], e[f"{key}_e2e"]
        queries = r["num_queries"]
        rows.append([split.name, f"{split.num_query} x {split.num_gallery}", _s(full["seconds"]),
                     _mb(full["peak_rss_mb"]), _mb(full["beyond_features_mb"]), f"{100 * full['mAP']:.1f} / "
                     f"{100 * full['R1']:.1f} / {100 * full['mINP']:.1f}", f"{queries} x {split.num_gallery}",
                     _s(r["distance_seconds"]), _s(r["rank_seconds"]), _s(r["previous_seconds"]),
                     _s(r["loop_seconds"]), f"{r['loop_seconds'] / r['rank_seconds']:.1f}x",
                     f"{r['previous_seconds'] / r['rank_seconds']:.1f}x",
                     f"{r['classic_seconds'] / r['rank_few_seconds']:.0f}x ({r['classic_queries']} queries)"])
    lines += _table(["set", "queries x gallery", "`evaluate_features`", "peak RSS", "beyond features",
                     "mAP / R1 / mINP (%)", "ranked matrix", "distance matrix", "ranking now", "ranking previous",
                     "per-query loop", "loop / now", "previous / now", "classic / now"], rows)
    lines += ["", "`evaluate_features` computes the distances a chunk of queries at a time (float32 matmul) and ranks "
              "each chunk at once; the other columns rank one precomputed matrix (all queries for Market, the "
              "first rows for MSMT17, whose full matrix would take 3.8 GB): the current `evaluate_rank`, the "
              "previous one (a stable argsort of every row), a plain per-query NumPy loop (argsort + masks per "
              "query) and torchreid's classic loop (Python list comprehension for AP), the last on "
              f"{scale.CLASSIC_QUERIES} queries against the current code on the same rows. All give the same "
              "numbers (see the comparisons below)."]
    return lines


def _clustering(c: dict, ctx) -> list[str]:
    lines = ["## ULA clustering (distance + DBSCAN + base classes: one `label_adaptation` call)", ""]
    rows = []
    for name in ("market", "msmt"):
        train = c[name]
        for label, cfg in (("jaccard", scale.JACCARD), ("euclidean", scale.EUCLIDEAN)):
            f = c[f"{name}_{label}"]
            setting = f"k-reciprocal Jaccard (k1 {cfg.k1}, k2 {cfg.k2}), eps {cfg.eps}" if label == "jaccard" \
                else f"Euclidean on unit features, eps {cfg.eps}"
            rows.append([train.name, str(train.num_images), setting, _s(f["seconds"]), _mb(f["peak_rss_mb"]),
                         _mb(f["beyond_features_mb"]), f"{f['num_clusters']} / {f['num_noise']}"])
    lines += _table(["set", "N", "distance", "time", "peak RSS", "beyond features", "clusters / noise"], rows)
    lines += ["", "Jaccard: top-k neighbours from symmetric blocks of a float32 matmul (each pair once), sparse "
              "k-reciprocal encodings, the Jaccard distance of overlapping pairs only, and DBSCAN "
              "(metric=\"precomputed\") on the sparse graph of the pairs within eps. Euclidean: the same blocks, "
              "keeping the pairs within eps (for eps_mode=quantile, the running smallest pairs). "
              "The Euclidean eps is one that finds identity clusters in these random features; at the paper's "
              "eps 1.0 all of them are noise, which would time an empty graph."]
    size = c["equality_size"]
    lines += ["", f"Equality with DBSCAN on the dense N x N matrix of the same distance (N = {size.num_images}, "
              f"{size.num_ids} identities, class count half the clusters so that size ties matter):", ""]
    lines += _table(["setting", "labels identical", "clusters"],
                    [[k, "yes" if v["equal"] else "**no**", str(v["clusters"])]
                     for k, v in c["equality"]["settings"].items()])
    return lines


def _rerank(r: dict, ctx) -> list[str]:
    f, split, eq = r["market_rerank"], r["market"], r["equality"]
    small = r["equality_size"]
    return ["## k-reciprocal re-ranking (k1 20, k2 6, lambda 0.3)", ""] + _table(
        ["set", "queries x gallery", "`re_ranking_features`", "peak RSS", "beyond features", "mAP / R1 after (%)"],
        [[split.name, f"{split.num_query} x {split.num_gallery}", _s(f["seconds"]), _mb(f["peak_rss_mb"]),
          _mb(f["beyond_features_mb"]), f"{100 * f['mAP']:.1f} / {100 * f['R1']:.1f}"]]) + [
        "", f"Against the previous implementation at {small.num_query} x {small.num_gallery}: the matrix entry "
        f"(`re_ranking`) differs by {eq['gap_matrix']:.1e} at most, the feature entry by {eq['gap_features']:.1e} "
        "(it ranks the squared distances before the row-max scaling and computes some pairs from the features)."]


def _growth(g: dict, ctx) -> list[str]:
    rows = []
    for row in g["rows"]:
        cells = [str(row["n"])]
        for key in ("jaccard", "jaccard_previous", "euclidean", "evaluation", "evaluation_previous"):
            f = row.get(key)
            cells.append("-" if f is None else f"{_s(f['seconds'])}, {_mb(f['peak_rss_mb'])}")
        rows.append(cells)
    return ["## Growth with N", ""] + _table(
        ["N", "ULA Jaccard", "ULA Jaccard, previous", "ULA Euclidean", "evaluation (N/5 x N)",
         "evaluation, previous"], rows) + [
        "", "Time and peak RSS. ULA on N training images (N/17 identities), evaluation of N/5 queries against a "
        f"gallery of N. The previous dense code runs up to N = {ctx.previous_max} (its memory grows as N^2). "
        "Plot: `benchmark_growth.png` (log-log).", "", "![growth with N](benchmark_growth.png)"]


def _training(t: dict, ctx) -> list[str]:
    rows = []
    for label, f in t.items():
        if f is None:
            rows.append([label, "-", "-", "-", "not run with --quick"])
            continue
        rows.append([label, f"{f['bare']:.1f}", f"{f['real']:.1f}", f"{100 * f['real'] / f['bare']:.0f}%",
                     f"batch {f['batch']}, {f['steps']} steps x {ctx.repeats}, {f['workers']} loader workers, "
                     f"images in memory: {'yes' if f['in_memory'] else 'no'}"])
    return ["## Training throughput (images/s)", ""] + _table(
        ["setting", "bare forward/backward", "real training steps", "real / bare", "measured"], rows) + [
        "", "Bare: forward + loss + backward + step on one pre-made batch (no data work). Real: the P x K loader "
        "with augmentation feeding the same step. Alternated, median of the repeats, synthetic_market images."]


def _studies(s: dict, ctx) -> list[str]:
    lines = ["## Studies: wall time and source pre-trainings (the pre-training cache)", ""]
    rows = []
    if s["smoke"] is None:
        rows.append(["smoke", "-", "-", "not run with --quick"])
    else:
        for label, run in (("smoke, first run (empty cache)", s["smoke"]["cold"]),
                           ("smoke, second run (another name, same results dir: cache filled)", s["smoke"]["warm"])):
            cost = run["cost"]
            rows.append([label, _s(run["seconds"]), "-" if cost is None else
                         f"{cost['pretrainings']} for {cost['trials']} trials ({cost['hits']} hits)",
                         "`python -m study.run --space smoke --results-dir TMP [--name smoke_cached]`"])
    ablation = s["ablation"]
    if ablation is None:
        rows.append(["ablation", "not measured in this run", "-",
                     "`python -m study.run --space ablation`, then rerun this suite with --studies-dir"])
    else:
        rows.append(["ablation (read from a finished study)", ablation["wall"],
                     f"{ablation['pretrainings']} for {ablation['trials']} trials ({ablation['hits']} hits)",
                     f"`{s['ablation_readme']}`"])
    lines += _table(["study", "wall time", "source pre-trainings", "source"], rows)
    lines += ["", "Without the cache every trial pre-trains its own source model (one per trial); with it, one per "
              "distinct pre-training configuration, shared across trials, studies and reruns."]
    return lines


def _data(d: dict, ctx) -> list[str]:
    return ["## Data loading vs the model (cpu preset, whole epochs)", "",
            f"Real epoch / bare loop = {100 * d['ratio']:.1f}% ({d['real']:.0f} vs {d['bare']:.0f} images/s; "
            f"loader alone {d['loader']:.0f} images/s). Details: `{Path(d['path']).name}`."]


def _paper(p: dict, ctx) -> list[str]:
    """The paper preset's data path and cost (benchmarks/paper_cost.py), its headings one level down."""
    body = p["text"].splitlines()[3:]  # past its title and the line naming its own command
    return ["## The paper preset: data path and cost", "",
            f"Details and the command that measures them alone: `{Path(p['path']).name}`.", "",
            *[f"#{line}" if line.startswith("## ") else line for line in body]]


def _synthetic(s: dict, ctx) -> list[str]:
    lines = ["## Synthetic benchmark calibration", "", f"Written to `{Path(s['path']).name}`."]
    for direction, (pretrain, adapt) in s["timings"].items():
        lines.append(f"- {direction}: pre-training {pretrain:.0f} s + adaptation {adapt:.0f} s")
    return lines


PROFILE_NOTES = """## Hot paths (profiled with cProfile and the torch profiler while building this)

Figures in this section are single development runs on this machine under other load (1-minute load average
2-5), so they only show orders of magnitude; the tables above are the same-run comparisons.

- Evaluation ranking (one 3368 x 15913 matrix): the previous `evaluate_rank` spent its time in `np.argsort`
  of every gallery row (5.1 s). Only the ranks of a query's matches matter, so rows were cut into 4096
  histogram bins between their smallest distance and their farthest match, with an exact order only inside a
  match's own bin (2.1 s, in torch). The profile then showed torch's boolean `masked_select` / `nonzero` and
  per-op overhead on small index sets; the entries no farther than the farthest match (about 5% of a row
  here) are now picked first with NumPy's `flatnonzero` and handled in NumPy, and the full-row minimum and
  count passes are gone (0.3 s).
- ULA Euclidean + DBSCAN (Market size, an eps that finds clusters): 26 s -> 3.6 s. The profile showed the
  size-tie means (one small matmul per tied cluster, and torch indexing with a NumPy index array, 15 ms
  each); the sums are now batched per size (one `bmm`). What is left is the matmul (about 2/3).
- Jaccard / re-ranking: the previous code sorted full N x N rows and built dense rows x N intermediates. Now
  the matmul is about 60% (each pair once, from symmetric blocks: half the previous flops), `topk` 20-25%
  (the transposed tail of a block has short rows, where `topk` is about 4x slower per entry than on long
  ones), the NumPy transpose of those tails about 5%. Block sizes of 32 to 256 MB were compared by CPU time
  at N = 16384 (7.8 to 8.7 s): 128 MB is kept. The size-tie blocks now join only the members' columns.
- Euclidean ULA: the dense matrix plus scikit-learn's radius search over it is replaced by the pairs within eps
  from the same symmetric blocks."""


if __name__ == "__main__":
    sys.exit(main())
