"""Writing the benchmark in the Market-1501 layout, and the cache that generates it once per setting."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from reidmodel.data.datasets import STANDARD_FOLDERS
from reidmodel.data.synthetic.identity import make_identity, sample_identity
from reidmodel.data.synthetic.render import make_camera, render_image
from reidmodel.data.synthetic.seeds import KEY_IMAGE, KEY_PLAN, KEY_SPLIT, KEY_STRANGER, rng_for
from reidmodel.data.synthetic.styles import DEFAULT_STYLES, DomainStyle

# Bump when the rendering changes in a way DomainStyle does not capture, so cached benchmarks are rebuilt.
FORMAT_VERSION = 1
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
# Market-1501 file names: pid (-1 junk, 0000 distractor), camera, sequence, frame, box index.
NAME_PATTERN = re.compile(r"^(-1|\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")
COMPLETE_MARKER = "COMPLETE"
JPEG_QUALITY = 92


@dataclass(frozen=True)
class SplitSizes:
    """The image counts of a real dataset's splits: a domain written at these sizes loads, clusters and evaluates
    as much as the real one, so a rehearsal on it costs what a run on the real data costs."""

    train_ids: int
    train_images: int
    query_ids: int
    query_images: int
    gallery_images: int  # the query identities' other images, then distractors and junk up to this count

    def scaled(self, factor: float) -> SplitSizes:
        """The same proportions at ``factor`` times the size (a CI-sized rehearsal), at least 4 identities."""
        ids = max(4, round(self.train_ids * factor)), max(4, round(self.query_ids * factor))
        return SplitSizes(ids[0], round(self.train_images / self.train_ids * ids[0]), ids[1],
                          round(self.query_images / self.query_ids * ids[1]),
                          round(self.gallery_images / self.query_ids * ids[1]))


# Market-1501 (Zheng et al., ICCV 2015) and DukeMTMC-reID (Zheng et al., ICCV 2017), as torchreid loads them.
REAL_SIZES = {
    "market1501": SplitSizes(751, 12936, 750, 3368, 19732),
    "dukemtmc": SplitSizes(702, 16522, 702, 2228, 17661),
}


# The real dataset each synthetic domain imitates (its cameras: 6 and 8).
STANDS_IN_FOR = {"synthetic_market": "market1501", "synthetic_duke": "dukemtmc"}


def _spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts that differ by at most one, the larger first."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def _sightings(rng: np.random.Generator, num_cameras: int, total: int | None = None) -> list[tuple[int, int, int]]:
    """(camera, frame, box index) of every image of one identity: 2-4 cameras, >= 2 images per camera; ``total``
    images, or 8-10."""
    cams = sorted(int(c) for c in rng.choice(np.arange(1, num_cameras + 1), size=min(num_cameras,
                  int(rng.integers(2, 5))), replace=False))
    drawn = int(rng.integers(8, 11))
    total = drawn if total is None else total
    counts = np.full(len(cams), 2)
    counts += np.bincount(rng.integers(len(cams), size=max(0, total - counts.sum())), minlength=len(cams))
    sightings = []
    for cam, count in zip(cams, counts, strict=True):
        frame = int(rng.integers(0, 900_000))
        for k in range(1, int(count) + 1):
            frame += int(rng.integers(5, 60))
            sightings.append((cam, frame, k))
    return sightings


def _file_name(pid: int, cam: int, frame: int, k: int) -> str:
    prefix = "-1" if pid < 0 else f"{pid:04d}"
    return f"{prefix}_c{cam}s1_{frame:06d}_{k:02d}.jpg"


def _save(image: Image.Image, path: Path) -> None:
    image.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling=0)


def _queries(rng: np.random.Generator, sightings: list[tuple[int, int, int]], count: int) -> set:
    """``count`` query images of one identity, one camera after another; every camera keeps a gallery image, so
    each query has a match in another camera."""
    seen = sorted({cam for cam, _, _ in sightings})
    order = rng.choice(seen, size=min(count, len(seen)), replace=False)
    query: set = set()
    while len(query) < count:
        before = len(query)
        for cam in order:
            in_cam = [s for s in sightings if s[0] == cam and s not in query]
            if len(in_cam) > 1 and len(query) < count:
                query.add(in_cam[int(rng.integers(len(in_cam)))])
        if len(query) == before:
            raise ValueError(f"{len(sightings)} images cannot give {count} queries: give the query ids more images")
    return query


def _image_plan(sizes: SplitSizes | None, pids: list[int], test_ids: set[int]) -> tuple[dict, dict, list[int]]:
    """Images and queries per identity (None: the small benchmark's draws), and the distractors and junk."""
    if sizes is None:
        extras = max(2, len(test_ids) // 4)
        return {}, dict.fromkeys(test_ids, 2), [extras, extras]
    train = sorted(set(pids) - test_ids)
    test = sorted(test_ids)
    per_test_id = round(sizes.train_images / sizes.train_ids * len(test))  # as often seen as a training identity
    extras = sizes.gallery_images - (per_test_id - sizes.query_images)
    if extras < 0:
        raise ValueError(f"gallery_images={sizes.gallery_images} is too small for the query identities' images")
    images = dict(zip(train, _spread(sizes.train_images, len(train)), strict=True))
    images.update(zip(test, _spread(per_test_id, len(test)), strict=True))
    queries = dict(zip(test, _spread(sizes.query_images, len(test)), strict=True))
    return images, queries, [extras // 2, extras - extras // 2]


def generate_domain(out: Path, style: DomainStyle, domain_index: int, *, num_ids: int, seed: int,
                    height: int, width: int, sizes: SplitSizes | None = None, folder: str | None = None) -> Path:
    """Write one domain as <out>/<folder or style.name>/{bounding_box_train,query,bounding_box_test}, with
    ``num_ids`` training and test identities of 8-10 images each, or at ``sizes``."""
    root = Path(out) / (folder or style.name)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty: delete it or choose another output folder")
    folders = {split: root / split for split in SPLITS}
    for split_folder in folders.values():
        split_folder.mkdir(parents=True, exist_ok=True)
    cameras = [make_camera(style, seed, domain_index, c, height=height, width=width)
               for c in range(1, style.num_cameras + 1)]

    num_train = num_ids if sizes is None else sizes.train_ids
    pids = rng_for(seed, domain_index, KEY_SPLIT).permutation(num_train + (num_ids if sizes is None else
                                                                           sizes.query_ids)) + 1
    test_ids = set(int(p) for p in pids[num_train:])
    images, queries, extras = _image_plan(sizes, [int(p) for p in pids], test_ids)
    for pid in sorted(int(p) for p in pids):
        person = make_identity(style, seed, domain_index, pid)
        plan_rng = rng_for(seed, domain_index, KEY_PLAN, pid)
        sightings = _sightings(plan_rng, style.num_cameras, images.get(pid))
        query = _queries(plan_rng, sightings, queries[pid]) if pid in test_ids else set()
        for cam, frame, k in sightings:
            split = "bounding_box_train" if pid not in test_ids else "query" if (cam, frame, k) in query \
                else "bounding_box_test"
            rng = rng_for(seed, domain_index, KEY_IMAGE, pid + 1, cam, k)
            image = render_image(style, cameras[cam - 1], person, rng, height=height, width=width)
            _save(image, folders[split] / _file_name(pid, cam, frame, k))

    # Distractors (pid 0000, strangers never seen twice) and junk (pid -1, failed detections) in the gallery.
    for (pid, junk), count in zip(((0, False), (-1, True)), extras, strict=True):
        for i in range(count):
            cam = i % style.num_cameras + 1
            k = i // style.num_cameras + 1
            stranger = sample_identity(style, rng_for(seed, domain_index, KEY_STRANGER, pid + 1, cam, k))
            rng = rng_for(seed, domain_index, KEY_IMAGE, pid + 1, cam, k)
            frame = int(rng.integers(0, 999_999))
            image = render_image(style, cameras[cam - 1], stranger, rng, height=height, width=width, junk=junk)
            _save(image, folders["bounding_box_test"] / _file_name(pid, cam, frame, k))
    return root


def _check_arguments(num_ids: int, seed: int, height: int, width: int) -> None:
    if not 2 <= num_ids <= 4999:
        raise ValueError(f"num_ids={num_ids} must be between 2 and 4999 (pids are 4 digits and twice num_ids)")
    if seed < 0:
        raise ValueError(f"seed={seed} must be >= 0")
    if height < 16 or width < 8:
        raise ValueError(f"image size {height}x{width} is too small: use height >= 16 and width >= 8")


def generate_benchmark(out: Path, *, num_ids: int = 120, seed: int = 0, height: int = 128, width: int = 64,
                       styles: Sequence[DomainStyle] = DEFAULT_STYLES, real_scale: float | None = None) -> Path:
    """Write every domain of the benchmark under out; returns out.

    ``real_scale``: each domain instead stands in for the real dataset it imitates (STANDS_IN_FOR), at that
    dataset's sizes times real_scale and under its standard folder name, so ``out`` is a data root the real-data
    spaces run on unchanged: a rehearsal of their cost (1.0) or of their plumbing (a CI-sized fraction).
    """
    _check_arguments(num_ids, seed, height, width)
    if real_scale is not None and not 0 < real_scale <= 1:
        raise ValueError(f"real_scale={real_scale} must be in (0, 1]: 1 writes the real datasets' sizes")
    out = Path(out)
    for domain_index, style in enumerate(styles):
        if real_scale is None:
            generate_domain(out, style, domain_index, num_ids=num_ids, seed=seed, height=height, width=width)
            continue
        dataset = STANDS_IN_FOR[style.name]
        generate_domain(out, style, domain_index, num_ids=num_ids, seed=seed, height=height, width=width,
                        sizes=REAL_SIZES[dataset].scaled(real_scale), folder=STANDARD_FOLDERS[dataset][0])
    return out


def benchmark_folder_name(num_ids: int, seed: int, height: int, width: int,
                          styles: Sequence[DomainStyle] = DEFAULT_STYLES) -> str:
    """The cache folder name: a change of any argument, style knob or format version gives a new folder."""
    digest = hashlib.sha1(repr((FORMAT_VERSION, tuple(styles))).encode()).hexdigest()[:8]
    return f"v{FORMAT_VERSION}_ids{num_ids}_seed{seed}_{height}x{width}_{digest}"


def ensure_synthetic(cache_dir: str | Path, *, num_ids: int = 120, seed: int = 0, height: int = 128,
                     width: int = 64, styles: Sequence[DomainStyle] = DEFAULT_STYLES) -> Path:
    """Generate once into a temporary folder and rename it into place, so readers never see half a benchmark."""
    _check_arguments(num_ids, seed, height, width)
    cache_dir = Path(cache_dir).expanduser()
    final = cache_dir / benchmark_folder_name(num_ids, seed, height, width, styles)
    if (final / COMPLETE_MARKER).is_file():
        return final
    if final.exists():
        raise FileExistsError(f"{final} exists without a {COMPLETE_MARKER} marker: delete it and retry")
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=cache_dir))
    try:
        generate_benchmark(staging, num_ids=num_ids, seed=seed, height=height, width=width, styles=styles)
        (staging / COMPLETE_MARKER).write_text(f"{final.name}\n")
        try:
            os.replace(staging, final)
        except OSError:
            # Another process renamed its copy into place first; its result is identical.
            if not (final / COMPLETE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
