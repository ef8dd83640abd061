"""What every benchmark part shares: reid-shaped random features, timing, child processes that
report their own peak memory, and a description of the machine."""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import resource
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from reidmodel.engine import cpu_model

# Feature model: identity centre + a camera's bias + noise, in 2048-d (ResNet-50's BNNeck width). With
# these weights the nearest-neighbour structure is that of a usefully trained model (at Market size:
# mAP about 30%, rank-1 about 70%, mINP a few %), neither trivially separable nor random.
DIM = 2048
CAMERA_WEIGHT = 0.8
NOISE = 0.05
_GENERATE_ROWS = 8192


@dataclass(frozen=True)
class TestSplit:
    """A query/gallery split shaped like a real one (sizes of torchreid's processing)."""

    name: str
    num_ids: int
    num_query: int
    num_gallery: int
    num_distractors: int  # gallery images of pid 0 (identities outside the query set)
    num_cameras: int

    def scaled(self, factor: int) -> TestSplit:
        return TestSplit(f"{self.name}/{factor}", max(4, self.num_ids // factor), max(8, self.num_query // factor),
                         max(32, self.num_gallery // factor), self.num_distractors // factor, self.num_cameras)


@dataclass(frozen=True)
class TrainSet:
    name: str
    num_ids: int
    num_images: int
    num_cameras: int

    def scaled(self, factor: int) -> TrainSet:
        return TrainSet(f"{self.name}/{factor}", max(4, self.num_ids // factor), max(64, self.num_images // factor),
                        self.num_cameras)


MARKET_TEST = TestSplit("Market-1501", 750, 3368, 15913, 2798, 6)
MSMT_TEST = TestSplit("MSMT17", 3060, 11659, 82161, 0, 15)
MARKET_TRAIN = TrainSet("Market-1501 train", 751, 12936, 6)
MSMT_TRAIN = TrainSet("MSMT17 train", 1041, 32621, 15)


def _fill(pids: torch.Tensor, cameras: torch.Tensor, centres, biases, generator) -> torch.Tensor:
    """Features for the given identities and cameras, written in row chunks (no full-size temporary)."""
    out = torch.empty(len(pids), DIM)
    for start in range(0, len(pids), _GENERATE_ROWS):
        rows = slice(start, start + _GENERATE_ROWS)
        out[rows] = centres[pids[rows]] + CAMERA_WEIGHT * biases[cameras[rows]]
        out[rows] += NOISE * torch.randn(len(out[rows]), DIM, generator=generator)
    return out


def test_features(split: TestSplit, seed: int = 0):
    """(qf, gf, q_pids, g_pids, q_camids, g_camids); pids 1..num_ids, distractors 0, float32 features."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(split.num_ids + 1 + split.num_distractors, DIM, generator=generator), dim=1)
    biases = F.normalize(torch.randn(split.num_cameras, DIM, generator=generator), dim=1)
    q_pids = torch.randint(1, split.num_ids + 1, (split.num_query,), generator=generator)
    g_pids = torch.randint(1, split.num_ids + 1, (split.num_gallery,), generator=generator)
    g_pids[split.num_gallery - split.num_distractors :] = 0
    q_cams = torch.randint(0, split.num_cameras, (split.num_query,), generator=generator)
    g_cams = torch.randint(0, split.num_cameras, (split.num_gallery,), generator=generator)
    # A distractor is its own (unlabelled) identity: centre num_ids + 1 + j.
    g_centres = g_pids.clone()
    g_centres[g_pids == 0] = split.num_ids + 1 + torch.arange(split.num_distractors)
    qf = _fill(q_pids, q_cams, centres, biases, generator)
    gf = _fill(g_centres, g_cams, centres, biases, generator)
    return qf, gf, q_pids.numpy(), g_pids.numpy(), q_cams.numpy(), g_cams.numpy()


def train_features(train: TrainSet, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised [N, 2048] float32 features and their identities."""
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(train.num_ids, DIM, generator=generator), dim=1)
    biases = F.normalize(torch.randn(train.num_cameras, DIM, generator=generator), dim=1)
    ids = torch.randint(0, train.num_ids, (train.num_images,), generator=generator)
    cams = torch.randint(0, train.num_cameras, (train.num_images,), generator=generator)
    features = _fill(ids, cams, centres, biases, generator)
    features /= features.norm(dim=1, keepdim=True)
    return features.numpy(), ids.numpy()


def timed(function: Callable, repeats: int):
    """(median seconds, all seconds, the last result) of ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def rss_mb() -> float:
    """The current resident set size of this process."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (getrusage RUSAGE_SELF, kilobytes on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


_CONTEXT = None


def in_child(function: Callable, *args, threads: int = 2) -> dict:
    """``function(*args)`` (a dict) run in a fresh child process, plus the child's peak RSS in MB.

    Children are forked from a server that has imported the benchmark modules (torch, NumPy, SciPy,
    scikit-learn, reidmodel) once and run nothing, so each measurement starts from the same small
    footprint and its peak RSS (getrusage in the child) is its own. A plain (not daemonic) process,
    so that a measured data loader may start its own workers.
    """
    global _CONTEXT
    if _CONTEXT is None:
        _CONTEXT = multiprocessing.get_context("forkserver")
        _CONTEXT.set_forkserver_preload(["benchmarks.scale", "benchmarks.training"])  # and all they import
    reader, writer = _CONTEXT.Pipe(duplex=False)
    process = _CONTEXT.Process(target=_child, args=(function, args, threads, writer))
    process.start()
    writer.close()
    try:
        outcome = reader.recv()
    except EOFError:
        outcome = RuntimeError(f"{function.__name__} died without a result (exit code {process.join() or process.exitcode})")
    process.join()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def _child(function: Callable, args: tuple, threads: int, writer) -> None:
    try:
        torch.set_num_threads(threads)
        logging.getLogger("reidmodel").setLevel(logging.ERROR)  # ULA's per-call summary lines
        start = rss_mb()
        result = function(*args)
        result["child_start_rss_mb"] = start
        result["peak_rss_mb"] = peak_rss_mb()
        writer.send(result)
    except BaseException as exc:  # report it to the parent, with where it happened
        writer.send(RuntimeError(f"{function.__name__} failed: {''.join(traceback.format_exception(exc))}"))
    finally:
        writer.close()


def machine() -> dict:
    """What the figures were measured on."""
    import scipy
    import sklearn

    memory = float("nan")
    try:
        with open("/proc/meminfo") as handle:
            memory = int(next(line for line in handle if line.startswith("MemTotal")).split()[1]) / 1024**2
    except (OSError, StopIteration):
        pass
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "memory_gb": memory,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
    }


def load_average() -> str:
    try:
        with open("/proc/loadavg") as handle:
            return " ".join(handle.read().split()[:3])
    except OSError:
        return "unknown"


def section_of(text: str, heading: str) -> str | None:
    """The section under ``heading`` (up to the next '## ' heading), or None."""
    start = text.find(heading)
    if start < 0:
        return None
    end = text.find("\n## ", start + len(heading))
    return text[start:] if end < 0 else text[start:end + 1]


def with_section(text: str, heading: str, section: str) -> str:
    """``text`` with the section under ``heading`` replaced, or added before the correctness comparisons (or at
    the end): a benchmark run on its own owns one section of results/benchmarks.md and keeps the others."""
    section = section.rstrip("\n") + "\n"
    old = section_of(text, heading)
    if old is not None:
        return text.replace(old, section + ("" if text.endswith(old) else "\n"), 1)
    if "## Correctness comparisons" in text:
        return text.replace("## Correctness comparisons", section + "\n## Correctness comparisons", 1)
    return text.rstrip("\n") + "\n\n" + section


def write_section(path: Path, heading: str, section: str) -> None:
    path.write_text(with_section(path.read_text() if path.exists() else "", heading, section))
