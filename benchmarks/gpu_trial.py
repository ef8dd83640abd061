"""The paper-preset training step on a GPU: images/s bare and with the loader in front, and peak GPU memory, for one
trial alone and for two trials sharing the GPU (what the paper spaces' gpus_per_trial 0.5 asks of it).

    python benchmarks/gpu_trial.py [--data-root DIR] [--steps 20] [--repeats 3] [--workers 4] [--trials 1 2]

Each trial is its own process running benchmarks/training.py's measurement (ResNet-50 + CBAM + BNNeck, 256x128,
batch 64, AMP + channels_last, the P x K loader with data.workers processes decoding and augmenting JPEGs);
concurrent trials start together. Without --data-root the images are a 10% stand-in of Market-1501
(reidmodel.data.synthetic --size real --scale 0.1) in a temporary folder. Issue 21's targets: with the loader at
least 85% of the bare step's images/s, and two trials fit on one GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from benchmarks.training import child_throughput
from reidmodel.data.synthetic import generate_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, help="a folder holding Market-1501 (default: a stand-in)")
    parser.add_argument("--steps", type=int, default=20, help="training steps per timing")
    parser.add_argument("--repeats", type=int, default=3, help="timings of each path (the median is printed)")
    parser.add_argument("--workers", type=int, default=4, help="data.workers of each trial")
    parser.add_argument("--threads", type=int, default=4, help="torch threads of each trial (cpus_per_trial)")
    parser.add_argument("--trials", type=int, nargs="+", default=[1, 2], help="trials sharing the GPU at once")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        parser.exit(2, "error: no CUDA device: run this on a machine with a GPU\n")
    print(f"{torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB, "
          f"torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_root or generate_benchmark(Path(tmp), height=128, width=64, real_scale=0.1)
        overrides = {"data.root": str(root), "data.source": "market1501", "data.target": "dukemtmc",
                     "model.pretrained": "none", "runtime.device": "cuda", "runtime.amp": True,
                     "runtime.channels_last": True, "data.workers": args.workers}
        print(f"{'trials':>6} {'trial':>5} {'bare img/s':>10} {'loader img/s':>12} {'loader/bare':>11} "
              f"{'peak GPU GiB':>12}")
        for trials in args.trials:
            for index, result in enumerate(together(trials, overrides, args)):
                print(f"{trials:>6} {index:>5} {result['bare']:>10.0f} {result['real']:>12.0f} "
                      f"{result['real'] / result['bare']:>11.0%} {result['gpu_peak_mb'] / 1024:>12.1f}")


def together(trials: int, overrides: dict, args: argparse.Namespace) -> list[dict]:
    """``trials`` measurements at once, each in a fresh process (its own CUDA context, as a Ray trial has)."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=trials, mp_context=context) as pool:
        futures = [pool.submit(child_throughput, "paper", overrides, args.steps, args.repeats, args.threads)
                   for _ in range(trials)]
        return [future.result() for future in futures]


if __name__ == "__main__":
    main()
