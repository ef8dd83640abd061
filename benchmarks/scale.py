"""Real-dataset scale: evaluation, ULA clustering and re-ranking at Market-1501 / MSMT17 sizes.

Every measurement runs in its own child process (``common.in_child``) on random features shaped like
the real sets, and reports the median of several runs and the child's peak RSS. Reference
implementations run in the same child on the same data, so ratios and equality checks are side by
side: the previous (sort-based, dense) code of ``benchmarks.previous``, a plain per-query NumPy loop,
and torchreid's classic Python loop.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN
from sklearn.preprocessing import normalize

from benchmarks import previous
from benchmarks.common import (
    MARKET_TEST,
    MARKET_TRAIN,
    MSMT_TEST,
    MSMT_TRAIN,
    TestSplit,
    TrainSet,
    in_child,
    peak_rss_mb,
    rss_mb,
    test_features,
    timed,
    train_features,
)
from reidmodel.config import ULAConfig
from reidmodel.evaluation import compute_distance_matrix, evaluate_features, evaluate_rank
from reidmodel.rerank import jaccard_distance, re_ranking, re_ranking_features
from reidmodel.ula import label_adaptation

# ULA settings timed: the cpu preset's Jaccard clustering, and Euclidean distances of unit features with
# an eps that finds identity clusters in these features (at the paper's 1.0 everything is noise here,
# which would time an empty neighbourhood graph).
JACCARD = ULAConfig(distance="jaccard", eps=0.5, num_classes=None)
EUCLIDEAN = ULAConfig(distance="euclidean", eps=1.25, num_classes=None)
CLASSIC_QUERIES = 300  # queries the classic torchreid loop ranks (it is slow); the others rank the same rows


def per_query_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50) -> dict:
    """The plain NumPy baseline: per query, a stable argsort of its row, then the protocol's masks."""
    cmc, ap_sum, inp_sum, valid = np.zeros(max_rank), 0.0, 0.0, 0
    for q in range(len(distmat)):
        order = np.argsort(distmat[q], kind="stable")
        pids = g_pids[order]
        same = pids == q_pids[q]
        keep = ~((same & (g_camids[order] == q_camids[q])) | (pids == -1))
        ranks = np.flatnonzero(same[keep]) + 1
        if len(ranks) == 0:
            continue
        cmc[ranks[0] - 1 :] += 1
        ap_sum += (np.arange(1, len(ranks) + 1) / ranks).mean()
        inp_sum += len(ranks) / ranks[-1]
        valid += 1
    return {"cmc": cmc / valid, "mAP": ap_sum / valid, "mINP": inp_sum / valid}


def classic_loop(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50) -> dict:
    """torchreid's eval_market1501 as written (Python loop, list comprehension for AP), with AGW's mINP."""
    indices = np.argsort(distmat, axis=1, kind="stable")
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)
    all_cmc, all_ap, all_inp = [], [], []
    for q_idx in range(distmat.shape[0]):
        order = indices[q_idx]
        remove = ((g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])) | (g_pids[order] == -1)
        raw_cmc = matches[q_idx][np.invert(remove)]
        if not np.any(raw_cmc):
            continue
        cmc = raw_cmc.cumsum()
        pos = np.max(np.where(raw_cmc == 1))
        all_inp.append(cmc[pos] / (pos + 1.0))
        cmc[cmc > 1] = 1
        cmc = cmc[:max_rank]
        all_cmc.append(np.concatenate([cmc, np.full(max_rank - len(cmc), cmc[-1])]))  # short galleries
        num_rel = raw_cmc.sum()
        tmp_cmc = raw_cmc.cumsum()
        tmp_cmc = np.asarray([x / (i + 1.0) for i, x in enumerate(tmp_cmc)]) * raw_cmc
        all_ap.append(tmp_cmc.sum() / num_rel)
    return {"cmc": np.asarray(all_cmc, dtype=np.float64).mean(0), "mAP": float(np.mean(all_ap)),
            "mINP": float(np.mean(all_inp)), "num_valid_queries": len(all_ap)}


def metric_gap(a: dict, b: dict) -> float:
    """Largest absolute difference of CMC, mAP and mINP between two results."""
    return float(max(np.abs(np.asarray(a["cmc"]) - np.asarray(b["cmc"])).max(),
                     abs(a["mAP"] - b["mAP"]), abs(a["mINP"] - b["mINP"])))


# --- child-process measurements (module-level so that they pickle) ---------------------------------


def child_evaluate_features(split: TestSplit, repeats: int) -> dict:
    qf, gf, *ids = test_features(split)
    before = rss_mb()
    seconds, times, result = timed(lambda: evaluate_features(qf, gf, *ids), repeats)
    return {"seconds": seconds, "times": times, "mAP": result["mAP"], "R1": float(result["cmc"][0]),
            "mINP": result["mINP"], "features_mb": before, "beyond_features_mb": peak_rss_mb() - before}


def child_ranking_ratios(split: TestSplit, repeats: int, num_queries: int | None) -> dict:
    """Ranking a distance matrix: current vs previous vs per-query loop (on ``num_queries`` rows or all),
    and vs the classic loop on CLASSIC_QUERIES rows; plus the matrix and features paths' agreement."""
    qf, gf, q_pids, g_pids, q_camids, g_camids = test_features(split)
    rows = slice(None) if num_queries is None else slice(0, num_queries)
    q_ids = (q_pids[rows], g_pids, q_camids[rows], g_camids)
    distance_seconds, _, distmat = timed(lambda: compute_distance_matrix(qf[rows], gf).numpy(), repeats)
    out = {"distance_seconds": distance_seconds, "num_queries": len(distmat)}
    out["rank_seconds"], _, current = timed(lambda: evaluate_rank(distmat, *q_ids), repeats)
    out["loop_seconds"], _, loop = timed(lambda: per_query_loop(distmat, *q_ids), repeats)
    out["previous_seconds"], _, before = timed(lambda: previous.evaluate_rank(distmat, *q_ids), repeats)
    features = evaluate_features(qf[rows], gf, *q_ids)
    few = slice(0, min(CLASSIC_QUERIES, len(distmat)))
    few_ids = (q_pids[rows][few], g_pids, q_camids[rows][few], g_camids)
    out["classic_queries"] = few.stop
    out["classic_seconds"], _, classic = timed(lambda: classic_loop(distmat[few], *few_ids), 1)
    out["rank_few_seconds"], _, current_few = timed(lambda: evaluate_rank(distmat[few], *few_ids), repeats)
    out["gap_loop"] = metric_gap(current, loop)
    out["gap_previous"] = metric_gap(current, before)
    out["gap_classic"] = metric_gap(current_few, classic)
    out["gap_features"] = metric_gap(current, features)
    out["mAP"] = current["mAP"]
    return out


def child_label_adaptation(train: TrainSet, cfg: ULAConfig, repeats: int) -> dict:
    features, ids = train_features(train)
    before = rss_mb()
    num_classes = train.num_ids
    seconds, times, result = timed(lambda: label_adaptation(features, cfg, num_classes), repeats)
    d = result.diagnostics
    return {"seconds": seconds, "times": times, "features_mb": before, "beyond_features_mb": peak_rss_mb() - before,
            **{k: d[k] for k in ("num_clusters", "num_classes", "num_noise", "eps", "degenerate")}}


def child_previous_cluster(train: TrainSet, cfg: ULAConfig, repeats: int) -> dict:
    features, _ = train_features(train)
    before = rss_mb()
    seconds, times, _ = timed(
        lambda: previous.cluster(features, cfg.distance, cfg.eps, cfg.min_samples, train.num_ids, cfg.k1, cfg.k2),
        repeats,
    )
    return {"seconds": seconds, "times": times, "features_mb": before, "beyond_features_mb": peak_rss_mb() - before}


def dense_labels(features: np.ndarray, cfg: ULAConfig, num_classes: int) -> tuple[np.ndarray, float]:
    """Base-class labels (and eps) from DBSCAN on the dense N x N matrix of the same distance (the previous
    path's algorithm on the current distance functions)."""
    features = normalize(features) if cfg.normalize else features  # as label_adaptation does
    if cfg.distance == "jaccard":
        dist = jaccard_distance(features, k1=cfg.k1, k2=cfg.k2)
    else:
        dist = compute_distance_matrix(features, features).numpy()
    eps = cfg.eps
    if cfg.eps_mode == "quantile":
        eps = float(np.quantile(dist[np.triu(np.ones(dist.shape, dtype=bool), 1)], cfg.eps_quantile))
    cluster_ids = DBSCAN(eps=eps, min_samples=cfg.min_samples, metric="precomputed").fit_predict(dist)
    ranking = []
    for cluster in np.unique(cluster_ids[cluster_ids >= 0]):
        members = np.flatnonzero(cluster_ids == cluster)
        pairs = len(members) * (len(members) - 1)
        ranking.append((-len(members), dist[np.ix_(members, members)].sum() / pairs if pairs else 0.0, cluster))
    labels = np.full(len(features), -1, dtype=np.int64)
    for label, (_, _, cluster) in enumerate(sorted(ranking)[:num_classes]):
        labels[cluster_ids == cluster] = label
    return labels, eps


def child_label_equality(train: TrainSet) -> dict:
    """Sparse (label_adaptation) vs dense DBSCAN labels, on settings where clusters are neither all
    noise nor one giant cluster, and the class count cuts through clusters of equal size."""
    features, _ = train_features(train)
    settings = {
        "jaccard eps 0.5": JACCARD,
        "jaccard eps 0.6, k1 10": JACCARD.model_copy(update=dict(eps=0.6, k1=10, k2=3)),
        "jaccard quantile 0.2%": JACCARD.model_copy(update=dict(eps_mode="quantile")),
        "euclidean eps 1.25": EUCLIDEAN,
        "euclidean quantile 0.1%": EUCLIDEAN.model_copy(update=dict(eps_mode="quantile", eps_quantile=0.001)),
    }
    out = {}
    for name, cfg in settings.items():
        cfg = cfg.model_copy(update=dict(similarity_threshold=1.0))  # nothing joins by template: DBSCAN's labels only
        num_classes = max(2, train.num_ids // 2)
        result = label_adaptation(features, cfg, num_classes)
        dense, _ = dense_labels(features, cfg, num_classes)
        out[name] = {"equal": bool(np.array_equal(result.pseudo_labels, dense)),
                     "clusters": result.diagnostics["num_clusters"], "labelled": int((dense >= 0).sum())}
    return {"settings": out}


def child_rerank(split: TestSplit, repeats: int) -> dict:
    qf, gf, *ids = test_features(split)
    before = rss_mb()
    seconds, times, distance = timed(lambda: re_ranking_features(qf, gf), repeats)
    result = evaluate_rank(distance, *ids)
    return {"seconds": seconds, "times": times, "features_mb": before, "beyond_features_mb": peak_rss_mb() - before,
            "mAP": result["mAP"], "R1": float(result["cmc"][0])}


def child_rerank_equality(split: TestSplit) -> dict:
    """Current re-ranking (matrix and feature entries) against the previous implementation."""
    qf, gf, *_ = test_features(split)
    matrices = [compute_distance_matrix(a, b).numpy() for a, b in ((qf, gf), (qf, qf), (gf, gf))]
    before = previous.re_ranking(*matrices)
    return {"gap_matrix": float(np.abs(re_ranking(*matrices) - before).max()),
            "gap_features": float(np.abs(re_ranking_features(qf, gf) - before).max())}


def child_previous_evaluation(split: TestSplit, repeats: int) -> dict:
    qf, gf, *ids = test_features(split)
    before = rss_mb()

    def run():
        return previous.evaluate_rank(previous.compute_distance_matrix(qf, gf), *ids)

    seconds, times, _ = timed(run, repeats)
    return {"seconds": seconds, "times": times, "features_mb": before, "beyond_features_mb": peak_rss_mb() - before}


# --- parts ----------------------------------------------------------------------------------------


def evaluation(ctx) -> dict:
    market, msmt = (MARKET_TEST, MSMT_TEST) if not ctx.quick else (MARKET_TEST.scaled(16), MSMT_TEST.scaled(64))
    out = {"market": market, "msmt": msmt}
    out["market_e2e"] = in_child(child_evaluate_features, market, ctx.repeats, threads=ctx.threads)
    out["market_ratios"] = in_child(child_ranking_ratios, market, ctx.repeats, None, threads=ctx.threads)
    out["msmt_e2e"] = in_child(child_evaluate_features, msmt, ctx.repeats, threads=ctx.threads)
    out["msmt_ratios"] = in_child(child_ranking_ratios, msmt, ctx.repeats, CLASSIC_QUERIES, threads=ctx.threads)
    for name in ("market_ratios", "msmt_ratios"):
        ratios = out[name]
        for gap in ("gap_loop", "gap_previous", "gap_classic"):
            ctx.check(f"evaluation {name.split('_')[0]}: current == {gap[4:]} (max |diff| of CMC/mAP/mINP)",
                      ratios[gap] <= 1e-9, f"{ratios[gap]:.1e}")
        # A chunk's matmul may round a distance differently from the full one's, which reorders near-ties.
        ctx.check(f"evaluation {name.split('_')[0]}: features path == matrix path",
                  ratios["gap_features"] <= 1e-5, f"{ratios['gap_features']:.1e}")
    return out


def clustering(ctx) -> dict:
    market, msmt = (MARKET_TRAIN, MSMT_TRAIN) if not ctx.quick else (MARKET_TRAIN.scaled(16), MSMT_TRAIN.scaled(32))
    out = {"market": market, "msmt": msmt}
    for name, train in (("market", market), ("msmt", msmt)):
        for label, cfg in (("jaccard", JACCARD), ("euclidean", EUCLIDEAN)):
            out[f"{name}_{label}"] = in_child(child_label_adaptation, train, cfg, ctx.repeats, threads=ctx.threads)
    equality = MARKET_TRAIN.scaled(4 if not ctx.quick else 24)
    out["equality_size"] = equality
    out["equality"] = in_child(child_label_equality, equality, threads=ctx.threads)
    for setting, found in out["equality"]["settings"].items():
        ctx.check(f"ULA labels, sparse == dense DBSCAN ({setting}, N={equality.num_images})", found["equal"],
                  f"{found['clusters']} clusters")
    return out


def rerank(ctx) -> dict:
    market = MARKET_TEST if not ctx.quick else MARKET_TEST.scaled(16)
    out = {"market": market}
    out["market_rerank"] = in_child(child_rerank, market, ctx.repeats, threads=ctx.threads)
    small = MARKET_TEST.scaled(16 if not ctx.quick else 48)
    out["equality_size"] = small
    out["equality"] = in_child(child_rerank_equality, small, threads=ctx.threads)
    ctx.check(f"re-ranking from matrices == previous ({small.num_query} x {small.num_gallery})",
              out["equality"]["gap_matrix"] == 0.0, f"{out['equality']['gap_matrix']:.1e}")
    ctx.check(f"re-ranking from features == previous up to float rounding ({small.num_query} x {small.num_gallery})",
              out["equality"]["gap_features"] <= 1e-5, f"{out['equality']['gap_features']:.1e}")
    return out


GROWTH = (2048, 4096, 8192, 16384, 32768)
GROWTH_QUICK = (256, 512)


def growth(ctx) -> dict:
    """Time and peak memory against N: Jaccard and Euclidean ULA on N training images, evaluation of
    N/5 queries against N gallery images; the previous dense code up to ``ctx.previous_max``."""
    rows = []
    for n in GROWTH_QUICK if ctx.quick else GROWTH:
        train = TrainSet(f"N={n}", max(4, round(n / 17.2)), n, 6)
        split = TestSplit(f"N={n}", max(4, n // 21), n // 5, n, n // 6, 6)
        row = {"n": n}
        row["jaccard"] = in_child(child_label_adaptation, train, JACCARD, ctx.repeats, threads=ctx.threads)
        row["euclidean"] = in_child(child_label_adaptation, train, EUCLIDEAN, ctx.repeats, threads=ctx.threads)
        row["evaluation"] = in_child(child_evaluate_features, split, ctx.repeats, threads=ctx.threads)
        if n <= ctx.previous_max:
            row["jaccard_previous"] = in_child(child_previous_cluster, train, JACCARD, ctx.repeats,
                                               threads=ctx.threads)
            row["evaluation_previous"] = in_child(child_previous_evaluation, split, ctx.repeats, threads=ctx.threads)
        rows.append(row)
    return {"rows": rows}


def plot_growth(rows: list[dict], path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = [("jaccard", "ULA Jaccard + DBSCAN"), ("jaccard_previous", "ULA Jaccard + DBSCAN, previous (dense)"),
              ("euclidean", "ULA Euclidean + DBSCAN"), ("evaluation", "evaluation (N/5 queries x N)"),
              ("evaluation_previous", "evaluation, previous (dense)")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in series:
        points = [(r["n"], r[key]) for r in rows if key in r]
        if not points:
            continue
        style = "--" if key.endswith("previous") else "-"
        n = [p[0] for p in points]
        axes[0].loglog(n, [p[1]["seconds"] for p in points], style, marker="o", label=label)
        axes[1].loglog(n, [p[1]["peak_rss_mb"] for p in points], style, marker="o", label=label)
    axes[0].set_ylabel("seconds (median)")
    axes[1].set_ylabel("peak RSS of the measuring process (MB)")
    sizes = [r["n"] for r in rows]
    for ax in axes:
        ax.set_xlabel("N")
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("Growth with N (2048-d random features shaped like re-ID sets)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


__all__ = ["clustering", "evaluation", "growth", "plot_growth", "rerank"]
