"""Writing the benchmark in the Market-1501 layout, and the cache that generates it once per setting."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

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


def _sightings(rng: np.random.Generator, num_cameras: int) -> list[tuple[int, int, int]]:
    """(camera, frame, box index) of every image of one identity: 2-4 cameras, 8-10 images, >= 2 per camera."""
    cams = sorted(int(c) for c in rng.choice(np.arange(1, num_cameras + 1), size=min(num_cameras,
                  int(rng.integers(2, 5))), replace=False))
    total = int(rng.integers(8, 11))
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


def generate_domain(out: Path, style: DomainStyle, domain_index: int, *, num_ids: int, seed: int,
                    height: int, width: int) -> Path:
    """Write one domain as <out>/<style.name>/{bounding_box_train,query,bounding_box_test}."""
    root = Path(out) / style.name
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} already exists and is not empty: delete it or choose another output folder")
    folders = {split: root / split for split in SPLITS}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    cameras = [make_camera(style, seed, domain_index, c, height=height, width=width)
               for c in range(1, style.num_cameras + 1)]

    pids = rng_for(seed, domain_index, KEY_SPLIT).permutation(2 * num_ids) + 1
    test_ids = set(int(p) for p in pids[num_ids:])
    for pid in sorted(int(p) for p in pids):
        person = make_identity(style, seed, domain_index, pid)
        plan_rng = rng_for(seed, domain_index, KEY_PLAN, pid)
        sightings = _sightings(plan_rng, style.num_cameras)
        query = set()
        if pid in test_ids:
            # One image from each of two cameras; the other images of those cameras stay in the gallery.
            seen = sorted({cam for cam, _, _ in sightings})
            for cam in plan_rng.choice(seen, size=2, replace=False):
                in_cam = [s for s in sightings if s[0] == cam]
                query.add(in_cam[int(plan_rng.integers(len(in_cam)))])
        for cam, frame, k in sightings:
            split = "bounding_box_train" if pid not in test_ids else "query" if (cam, frame, k) in query \
                else "bounding_box_test"
            rng = rng_for(seed, domain_index, KEY_IMAGE, pid + 1, cam, k)
            image = render_image(style, cameras[cam - 1], person, rng, height=height, width=width)
            _save(image, folders[split] / _file_name(pid, cam, frame, k))

    # Distractors (pid 0000, strangers never seen twice) and junk (pid -1, failed detections) in the gallery.
    extras = max(2, num_ids // 4)
    for pid, junk in ((0, False), (-1, True)):
        for i in range(extras):
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
                       styles: Sequence[DomainStyle] = DEFAULT_STYLES) -> Path:
    """Write every domain of the benchmark under out; returns out."""
    _check_arguments(num_ids, seed, height, width)
    out = Path(out)
    for domain_index, style in enumerate(styles):
        generate_domain(out, style, domain_index, num_ids=num_ids, seed=seed, height=height, width=width)
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
