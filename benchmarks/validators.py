"""The label-free validators' cost per cycle at Market-1501 size, against the cost of a cycle.

    python -m benchmarks.validators            # Market size; writes its section into results/benchmarks.md
    python -m benchmarks.validators --quick    # small sizes, prints only

Each validator (reidmodel.validators) is timed on Market-shaped random features (12,936 x 2048, 751 identities,
benchmarks/common.py) at the default sample of eval.validator_samples images, after one real ULA step on them (whose
cluster ids and distance the clustering validators read); DEV against Market's 3,368 query features as the source
queries (Duke, the other source, has 2,228). A cycle's cost is measured on the same machine, in parts:
the forward pass of the paper's model (ResNet-50 + CBAM, 256x128) that extracts the sample's features, and the
real training throughput that fine-tuning runs at (benchmarks/training.py), over the images ULA labelled.
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from benchmarks import training
from benchmarks.common import (
    MARKET_TEST,
    MARKET_TRAIN,
    in_child,
    load_average,
    machine,
    test_features,
    timed,
    train_features,
    write_section,
)
from reidmodel.config import ULAConfig, preset
from reidmodel.model import build_model
from reidmodel.ula import label_adaptation
from reidmodel.validators import (
    batch_nuclear_norm,
    class_ami,
    clustering_validators,
    deep_embedded_validation,
    domain_weights,
    information_maximisation,
    kmeans_clusters,
    sample_indices,
    soft_neighbourhood_density,
)

SECTION = "## Label-free validators: cost per cycle (issue 17)"
JACCARD = ULAConfig(distance="jaccard", eps=0.5, num_classes=None)  # the cpu preset's ULA, as benchmarks.scale
EUCLIDEAN = ULAConfig(distance="euclidean", eps=1.25, num_classes=None)
LOGIT_SCALE = 30.0  # a trained classifier's logits are larger than the unit features' cosines


def child_validators(train, source_test, samples: int, repeats: int) -> dict:
    """Seconds per validator (median of ``repeats``) on one ULA step of Market-shaped features."""
    features, _ = train_features(train)
    out: dict = {"samples": min(samples, len(features)), "num_images": len(features)}
    for label, cfg in (("jaccard", JACCARD), ("euclidean", EUCLIDEAN)):
        start = time.perf_counter()
        result = label_adaptation(features, cfg, train.num_ids)
        out[f"ula_{label}_seconds"] = time.perf_counter() - start
        out[f"labelled_{label}"] = int((result.pseudo_labels >= 0).sum())
        previous = np.random.default_rng(1).permutation(result.pseudo_labels)  # another labelling, for stability
        out[f"clustering_{label}"], _, found = timed(lambda r=result, p=previous: clustering_validators(
            r.cluster_ids, r.distance_rows, r.pseudo_labels, p, samples=samples, seed=0), repeats)
        out[f"silhouette_{label}"] = found["ula_silhouette"]
        if label == "jaccard":
            templates = torch.from_numpy(result.templates)
    sample = torch.from_numpy(features[sample_indices(len(features), samples, seed=0)])
    logits = LOGIT_SCALE * sample @ templates.T
    out["num_classes"] = logits.shape[1]
    out["snd"] = timed(lambda: soft_neighbourhood_density(sample), repeats)[0]
    out["class_ami"] = timed(lambda: class_ami(logits, kmeans_clusters(sample, logits.shape[1], seed=0)), repeats)[0]
    out["info_max"] = timed(lambda: information_maximisation(logits), repeats)[0]
    out["bnm"] = timed(lambda: batch_nuclear_norm(logits), repeats)[0]
    queries = test_features(source_test)[0]
    losses = np.random.default_rng(0).random(len(queries))
    out["num_source_queries"] = len(queries)
    out["dev"] = timed(lambda: deep_embedded_validation(losses, domain_weights(queries, sample, seed=0)), repeats)[0]
    return out


def child_extraction(batch: int, batches: int) -> dict:
    """Images/s of the paper model's eval-mode forward pass (feature extraction), on random 256x128 images."""
    config = preset("paper")
    model = build_model(config.model.model_copy(update={"pretrained": "none"}), MARKET_TRAIN.num_ids).eval()
    images = torch.randn(batch, 3, config.data.height, config.data.width)
    rates = []
    with torch.no_grad():
        model(images[:2])  # warm-up
        for _ in range(batches):
            start = time.perf_counter()
            model(images)
            rates.append(batch / (time.perf_counter() - start))
    return {"images_per_second": statistics.median(rates), "batch": batch, "batches": batches}


def measure(quick: bool, samples: int, repeats: int, threads: int) -> dict:
    train, test = (MARKET_TRAIN.scaled(16), MARKET_TEST.scaled(16)) if quick else (MARKET_TRAIN, MARKET_TEST)
    found = {"validators": in_child(child_validators, train, test, samples, repeats, threads=threads)}
    if not quick:  # minutes of ResNet-50 on CPU: full runs only
        found["extraction"] = in_child(child_extraction, 32, 3, threads=threads)
        overrides = dict(training.SETTINGS[1][2])
        found["training"] = in_child(training.child_throughput, "paper", overrides, 2, 1, threads, threads=threads)
    return found


def section(found: dict, header: dict) -> str:
    v = found["validators"]
    m = header["machine"]
    lines = [SECTION, "", f"Regenerated by `{header['command']}` on {header['started']}; {m['cpu']}, {m['cpus']} "
             f"CPUs, torch threads {header['threads']}, load average {header['load']} at the start; CPU only. "
             f"Median of {header['repeats']} runs per validator.", "",
             f"Features: {v['num_images']} x 2048 random Market-shaped features (benchmarks/common.py), one ULA "
             f"step on them (Jaccard k1 20 k2 6 eps 0.5, and Euclidean eps 1.25), {v['num_classes']} template "
             f"classes; the model validators read a sample of {v['samples']} images (eval.validator_samples), the "
             "silhouette that many rows against every clustered image.", ""]
    rows = [["SND (`soft_neighbourhood_density`)", v["snd"]],
            ["ClassAMI (k-means with the class count + AMI)", v["class_ami"]],
            ["IM (`information_maximisation`)", v["info_max"]],
            ["BNM (`batch_nuclear_norm`)", v["bnm"]],
            [f"DEV (`domain_weights` + `deep_embedded_validation`, {v['num_source_queries']} source queries)",
             v["dev"]],
            ["ULA silhouette + noise + stability, Jaccard (`clustering_validators`)", v["clustering_jaccard"]],
            ["ULA silhouette + noise + stability, Euclidean", v["clustering_euclidean"]]]
    cycle = None
    if "extraction" in found:
        extraction = v["samples"] / found["extraction"]["images_per_second"]
        rows.append([f"feature extraction of the {v['samples']} sampled images (paper model, measured "
                     f"{found['extraction']['images_per_second']:.1f} images/s)", extraction])
        labelled = v["labelled_jaccard"]
        epochs = preset("paper").adapt.cycle_epochs
        cycle = epochs * labelled / found["training"]["real"]
    total = sum(seconds for _, seconds in rows) - min(v["clustering_jaccard"], v["clustering_euclidean"])
    table = ["| validator | seconds per cycle | share of a cycle |", "|---|---|---|"]
    for name, seconds in rows + [["all of them (one ULA distance)", total]]:
        share = f"{100 * seconds / cycle:.2f}%" if cycle else "-"
        table.append(f"| {name} | {seconds:.2f} | {share} |")
    lines += table
    if cycle:
        lines += ["", f"A cycle, counted low: fine-tuning alone, {epochs} epochs (the paper's adapt.cycle_epochs) over "
                  f"the {labelled} images ULA labelled at the measured real training throughput of the paper model "
                  f"on this machine ({found['training']['real']:.2f} images/s, batch "
                  f"{found['training']['batch']}): {cycle / 3600:.1f} h; ULA's own clustering took "
                  f"{v['ula_jaccard_seconds']:.1f} s (Jaccard) and evaluation comes on top. "
                  + ("Every validator is far under 10% of that." if total < cycle / 10 else
                     "**The validators together exceed 10% of that.**")
                  + f" On a GPU, fine-tuning runs some hundred times faster while these validators "
                  f"stay on the CPU (all but the extraction): they fit 10% of any cycle of at least "
                  f"{10 * (total - extraction):.0f} s plus the GPU's extraction of {v['samples']} images."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, printed only")
    parser.add_argument("--samples", type=int, default=preset("paper").eval.validator_samples,
                        help="images the validators read (default: eval.validator_samples)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure, the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in every measurement")
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks.md"), help="report the section goes in")
    args = parser.parse_args(argv)
    header = {"command": "python -m benchmarks.validators" + (" --quick" if args.quick else ""),
              "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
              "threads": args.threads, "repeats": args.repeats, "load": load_average()}
    text = section(measure(args.quick, args.samples, args.repeats, args.threads), header)
    print(text)
    if not args.quick:
        write_section(args.out, SECTION, text)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
