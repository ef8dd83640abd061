"""Training throughput: real training steps (P x K loader, augmentation) against a bare loop that
repeats one pre-made batch (no data work at all), on the same model and optimiser, alternating."""

from __future__ import annotations

import itertools
import os
import statistics
import time

import torch

from benchmarks.common import in_child
from reidmodel.config import apply_overrides, preset
from reidmodel.data import build_train_loader
from reidmodel.engine import TrainStep, build_optimizers, resolve_device, train_one_epoch
from reidmodel.losses import ReIDLoss
from reidmodel.model import build_model
from reidmodel.pipeline import load_domain

# (label, preset, overrides). ResNet-50 runs at the paper's 256x128 input with a P x K batch of 4 x 4
# instead of 16 x 4: one step of 64 takes about a minute and some 7 GB on 2 cores; images/s barely
# depends on the batch size on CPU.
SETTINGS = (
    ("cpu preset (ResNet-10 + CBAM, 64x32)", "cpu", {}),
    ("paper preset (ResNet-50 + CBAM, 256x128)", "paper",
     {"data.source": "synthetic_market", "data.target": "synthetic_duke", "model.pretrained": "none",
      "data.batch_size": 16}),
)


def child_throughput(name: str, overrides: dict, steps: int, repeats: int, threads: int) -> dict:
    """Bare and real images/s of ``steps`` training steps, on the config's device (runtime.device, amp and
    channels_last as a trial sets them), with the peak GPU memory on CUDA."""
    config = apply_overrides(preset(name), {**overrides, "runtime.threads": threads})
    # The paper preset's 4 loader workers, at most one per CPU of this machine.
    config = apply_overrides(config, {"data.workers": min(config.data.workers, os.cpu_count() or 1)})
    device = resolve_device(config.runtime.device)
    domain = load_domain(config, config.data.source)
    num_ids = domain.dataset.num_train_pids
    model = build_model(config.model, num_ids).to(device)
    if config.runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    criterion = ReIDLoss(config.loss, num_ids, model.feature_dim).to(device)
    optimizer, center_optimizer = build_optimizers(model, criterion, 3.5e-4, 5e-4, config.loss.center_lr)
    train_step = TrainStep(criterion, optimizer, center_optimizer, config.loss.center_weight, device,
                           amp=config.runtime.amp, channels_last=config.runtime.channels_last)
    loader = build_train_loader(domain.dataset.train, config.data, seed=0, images=domain.images["train"])

    def batches():  # epochs back to back, as training sees them
        for epoch in itertools.count():
            loader.sampler.set_epoch(epoch)
            yield from loader

    stream = batches()
    batch = next(stream)

    def step(source) -> float:
        start = time.perf_counter()
        train_one_epoch(model, source, train_step)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return steps * config.data.batch_size / (time.perf_counter() - start)

    step([batch])  # warm-up of both paths
    step(itertools.islice(stream, 1))
    bare, real = [], []
    for _ in range(repeats):  # alternate, so that drift hits both alike
        bare.append(step([batch] * steps))
        real.append(step(itertools.islice(stream, steps)))
    return {"bare": statistics.median(bare), "real": statistics.median(real), "steps": steps,
            "batch": config.data.batch_size, "workers": config.data.workers, "in_memory": config.data.in_memory,
            "backbone": config.model.backbone, "input": f"{config.data.height}x{config.data.width}",
            "device": str(device), "gpu_peak_mb": torch.cuda.max_memory_allocated(device) / 2**20
            if device.type == "cuda" else None}


def training(ctx) -> dict:
    out = {}
    for label, name, overrides in SETTINGS:
        if ctx.quick and name != "cpu":
            out[label] = None  # minutes per step on CPU: full runs only
            continue
        steps = (1 if ctx.quick else 20) if name == "cpu" else 2
        if ctx.quick:
            overrides = {**overrides, "data.batch_size": 16}
        out[label] = in_child(child_throughput, name, overrides, steps, ctx.repeats, ctx.threads, threads=ctx.threads)
        ctx.check(f"training throughput measured ({label})", out[label]["real"] > 0 and out[label]["bare"] > 0,
                  f"{out[label]['real']:.0f} / {out[label]['bare']:.0f} images/s")
    return out
