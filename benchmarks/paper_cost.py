"""The paper preset's data path and cost on this machine: one loader worker's decode + augment (PIL, the loader's
path, against torchvision.io.decode_jpeg) against the bare training step (ResNet-50 + CBAM, 256x128, batch 64)
and the feature extraction, ULA at Market and Duke sizes, and from them the cost of the paper's schedule, every
figure not measured marked extrapolated.

    python -m benchmarks.data_throughput --preset paper [--steps 1]   -> results/data_throughput_paper.md
    python -m benchmarks.run --only paper                              (a section of results/benchmarks.md)

Images come from the real-size stand-in (reidmodel.data.synthetic --size real, a 5% sample): 128x64 JPEGs, the
size of Market-1501's and DukeMTMC-reID's crops, resized to 256x128 by the transform as real ones are.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torchvision.io import decode_jpeg, read_file

from benchmarks.common import TrainSet, in_child, timed
from benchmarks.scale import EUCLIDEAN, child_label_adaptation
from benchmarks.training import child_throughput
from reidmodel.config import ULAConfig, apply_overrides, preset
from reidmodel.data import build_test_loader, resolve_dataset
from reidmodel.data.loader import read_image
from reidmodel.data.sampler import IdentitySampler
from reidmodel.data.synthetic import generate_benchmark
from reidmodel.data.synthetic.writer import REAL_SIZES, _spread
from reidmodel.data.transforms import build_train_transform
from reidmodel.evaluation import extract_features
from reidmodel.model import build_model

# ablation-modern's clustering (SpCL's k1 30 / k2 6, eps 0.6).
MODERN = ULAConfig(distance="jaccard", k1=30, k2=6, eps=0.6, num_classes=None)
CAMERAS = {"market1501": 6, "dukemtmc": 8}
WORKER_IMAGES = 128  # images one worker decodes and augments per timing


def run_paper(args: argparse.Namespace) -> dict:
    measured = measure(args.threads, args.steps)
    text = "\n".join(report(measured, args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return {"text": text, "path": str(args.out), **measured}


def part(ctx) -> dict:
    """The suite's ``paper`` part: measured here, rendered by benchmarks.run."""
    args = argparse.Namespace(threads=ctx.threads, steps=1, out=Path(ctx.out_dir) / "data_throughput_paper.md")
    return run_paper(args)


def measure(threads: int, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_benchmark(Path(tmp), height=128, width=64, real_scale=0.05)
        config = apply_overrides(preset("paper"), {"data.root": str(root), "data.source": "market1501",
                                                   "data.target": "dukemtmc", "model.pretrained": "none"})
        records = resolve_dataset("market1501", root).train[:WORKER_IMAGES]
        worker = worker_rates([r.path for r in records], config)
        step = in_child(child_throughput, "paper", {key: value for key, value in config.flat().items() if key in (
            "data.root", "data.source", "data.target", "model.pretrained")}, steps, 1, threads, threads=threads)
        torch.set_num_threads(threads)
        extract = extract_rate(config, records[:32])
    ula = {f"{name}_{label}": in_child(child_label_adaptation, TrainSet(name, sizes.train_ids, sizes.train_images,
                                                                         CAMERAS[name]), cfg, 1, threads=threads)
           for name, sizes in REAL_SIZES.items() for label, cfg in (("euclidean", EUCLIDEAN), ("jaccard", MODERN))}
    return {"worker": worker, "step": step, "extract": extract, "ula": ula}


def worker_rates(paths: list[str], config) -> dict[str, float]:
    """Images/s of one loader worker (one thread, as DataLoader workers run): decode alone and decode + the
    paper preset's training transform, with PIL (the loader's read_image) or torchvision's JPEG decoder."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    transform = build_train_transform(config.data)
    # PIL's tensor is a channels-last view (pil_to_tensor permutes HWC); made contiguous, the transform runs on
    # the layout decode_jpeg returns.
    decoders = {"PIL": read_image, "PIL + contiguous()": lambda path: read_image(path).contiguous(),
                "torchvision.io.decode_jpeg": lambda path: decode_jpeg(read_file(path))}
    rates = {}
    try:
        for name, decode in decoders.items():
            rates[f"{name} decode"] = len(paths) / timed(lambda d=decode: [d(p) for p in paths], 3)[0]
            rates[f"{name} decode + augment"] = len(paths) / timed(
                lambda d=decode: [transform(d(p)) for p in paths], 3)[0]
    finally:
        torch.set_num_threads(previous)
    return rates


def extract_rate(config, records) -> float:
    """Images/s of feature extraction (forward only, eval mode) at the preset's input size."""
    model = build_model(config.model, 10)
    loader = build_test_loader(records, config.data.model_copy(update={"workers": 0}), batch_size=len(records))
    extract_features(model, loader, "cpu")  # warm-up
    start = time.perf_counter()
    extract_features(model, loader, "cpu")
    return len(records) / (time.perf_counter() - start)


def epoch_images(dataset: str, batch_size: int = 64, num_instances: int = 4) -> int:
    """Images in one P x K epoch over the stand-in's training set (leftovers under K per identity dropped)."""
    sizes = REAL_SIZES[dataset]
    labels = [pid for pid, count in enumerate(_spread(sizes.train_images, sizes.train_ids)) for _ in range(count)]
    return len(IdentitySampler(labels, batch_size, num_instances))


def cost_rows(measured: dict, schedule) -> list[list[str]]:
    """Per dataset size: a source epoch, an adaptation cycle (the paper's 5 epochs), the paper's schedule."""
    train, forward = measured["step"]["bare"], measured["extract"]
    rows = []
    for name, sizes in REAL_SIZES.items():
        images = epoch_images(name)
        epoch = images / train
        evaluation = (sizes.query_images + sizes.gallery_images) / forward
        features = sizes.train_images / forward
        cluster = measured["ula"][f"{name}_euclidean"]["seconds"]
        cycle = features + cluster + schedule.adapt.cycle_epochs * epoch + evaluation
        rows.append([name, f"{images}", _h(epoch), _h(evaluation), _h(features), f"{cluster:.1f} s",
                     _h(cycle), _h(schedule.source.epochs * epoch + schedule.adapt.cycles * cycle)])
    return rows


def report(m: dict, args: argparse.Namespace) -> list[str]:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    paper, step = preset("paper"), m["step"]
    worker_rows = [[name, f"{rate:.0f}"] for name, rate in m["worker"].items()]
    pil = m["worker"]["PIL decode + augment"]
    lines = [
        "# The paper preset: data path and cost", "",
        f"Regenerated by `python -m benchmarks.data_throughput --preset paper --threads {args.threads} --steps "
        f"{args.steps}` on {stamp}, {platform.machine()} with {os.cpu_count()} CPUs, torch {torch.__version__}, "
        "CPU only (no GPU lent). Other work shares this machine, so every figure is a lower bound on its speed.", "",
        "## One loader worker (one thread) against the training step", "",
        "| path | images/s |", "|---|---|", *[f"| {a} | {b} |" for a, b in worker_rows],
        f"| bare training step, ResNet-50 + CBAM + BNNeck, 256x128, batch {step['batch']} ({args.threads} threads; "
        f"{step['steps']} step after a warm-up) | {step['bare']:.1f} |",
        f"| the same step fed by the loader ({step['workers']} workers) | {step['real']:.1f} |",
        f"| feature extraction (forward only), 256x128 | {m['extract']:.1f} |", "",
        f"Peak memory of the training process: {step['peak_rss_mb'] / 1024:.1f} GB (RSS). One worker decodes and "
        f"augments {pil:.0f} images/s, {pil / step['bare']:.0f}x what the step consumes here, so on this CPU the "
        "step, not the loader, bounds training; the loader would bound a GPU step faster than "
        f"{paper.data.workers} x {pil:.0f} = {paper.data.workers * pil:.0f} images/s (the paper preset's "
        f"{paper.data.workers} workers). benchmarks/gpu_trial.py measures that on a GPU.", "",
        "## Paper preset: cost on this CPU", "",
        "Measured: the images/s above and ULA (Euclidean distances + DBSCAN, the paper's clustering) on reid-shaped "
        "random features of each training-set size. Everything else is *extrapolated* from them: a P x K epoch is "
        "its images / the bare step's images/s; a cycle is the target's training features + ULA + "
        f"{paper.adapt.cycle_epochs} epochs (every image labelled, an upper bound) + the target's evaluation "
        "(query + gallery; eval.eval_source doubles it).", "",
        "| dataset size | P x K epoch (images) | source epoch (extrapolated) | evaluation (extrapolated) | "
        "training features (extrapolated) | ULA (measured) | adaptation cycle (extrapolated) | "
        f"paper schedule: {paper.source.epochs} epochs + {paper.adapt.cycles} cycles (extrapolated) |",
        "|---|---|---|---|---|---|---|---|",
        *["| " + " | ".join(row) + " |" for row in cost_rows(m, paper)], "",
        "ULA with ablation-modern's Jaccard (k1 30, k2 6, eps 0.6): "
        + ", ".join(f"{name} {m['ula'][f'{name}_jaccard']['seconds']:.1f} s" for name in REAL_SIZES) + " (measured).",
    ]
    return lines + gpu_rows()


def gpu_rows() -> list[str]:
    missing = "not measured: no GPU lent"
    rows = [("time per source epoch (Duke size) / per adaptation cycle (Market size)", missing),
            ("GPU memory per trial (peak, AMP + channels_last, batch 64)", missing),
            ("trials per GPU", missing + " (the spaces assume 2: gpus_per_trial 0.5)"),
            ("GPU-hours of the paper ablation (ablation-paper, 20 trials, 4 source pre-trainings)", missing),
            ("GPU-hours of a 40-sample search (hpo-paper, up to 9 pre-trainings per direction)", missing)]
    return ["", "## Paper preset on a GPU", "", "| figure | value |", "|---|---|",
            *[f"| {a} | {b} |" for a, b in rows], "",
            "To measure them on a lent GPU: `python benchmarks/gpu_trial.py` (the paper-preset training step with "
            "AMP + channels_last, bare and with the loader in front, peak GPU memory, one trial alone and two "
            "sharing the GPU). Then: source stage = 120 x (P x K epoch / step images/s); cycle = (training "
            "features + query + gallery) / extraction images/s + ULA + 5 epochs; ablation = per direction 2 "
            "source stages + 8 adapting trials x 16 cycles, divided by the trials per GPU; a 40-sample search = up "
            "to 9 source stages + 40 trials x at most 16 cycles (ASHA stops most early)."]


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min" if seconds >= 60 else \
        f"{seconds:.1f} s"
