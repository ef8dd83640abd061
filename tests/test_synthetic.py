"""The synthetic benchmark: Market-1501 layout and names, split rules, determinism, caching and the CLI."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reidmodel.data import synthetic
from reidmodel.data.synthetic import SYNTHETIC_DOMAINS, ensure_synthetic, generate_benchmark, writer

# Parsed independently of the module's own pattern, so a wrong pattern there cannot hide a wrong name.
NAME = re.compile(r"^(-1|\d{4})_c([1-9])s1_(\d{6})_(\d{2})\.jpg$")
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
IDS, HEIGHT, WIDTH = 6, 48, 24
CAMERAS = {"synthetic_market": 6, "synthetic_duke": 8}


def parse(folder: Path) -> list[tuple[int, int]]:
    """(pid, camera) of every image; fails on any file that is not a Market-1501 name."""
    out = []
    for path in sorted(folder.iterdir()):
        match = NAME.match(path.name)
        assert match, f"bad file name {path}"
        out.append((int(match.group(1)), int(match.group(2))))
    return out


def read_all(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def digest(folder: Path) -> str:
    """One hash over every file's relative path and bytes."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    return generate_benchmark(tmp_path_factory.mktemp("bench"), num_ids=IDS, seed=3, height=HEIGHT, width=WIDTH)


def test_layout_names_and_image_size(bench):
    assert sorted(p.name for p in bench.iterdir()) == sorted(SYNTHETIC_DOMAINS)
    for domain in SYNTHETIC_DOMAINS:
        assert sorted(p.name for p in (bench / domain).iterdir()) == sorted(SPLITS)
        for split in SPLITS:
            files = sorted((bench / domain / split).iterdir())
            assert files and parse(bench / domain / split)
            with Image.open(files[0]) as image:
                assert image.format == "JPEG" and image.mode == "RGB" and image.size == (WIDTH, HEIGHT)


@pytest.mark.parametrize("domain", SYNTHETIC_DOMAINS)
def test_splits_follow_market_rules(bench, domain):
    train = parse(bench / domain / "bounding_box_train")
    query = parse(bench / domain / "query")
    gallery = parse(bench / domain / "bounding_box_test")
    train_ids = {pid for pid, _ in train}
    test_ids = {pid for pid, _ in gallery if pid > 0}
    assert len(train_ids) == IDS and len(test_ids) == IDS
    assert not train_ids & test_ids and 0 not in train_ids and -1 not in train_ids
    assert {pid for pid, _ in query} == test_ids

    # Every identity: 2-4 cameras, 8-10 images; the query holds one image per camera from two cameras.
    per_id = defaultdict(list)
    for pid, cam in train + query + [g for g in gallery if g[0] > 0]:
        per_id[pid].append(cam)
    for cams in per_id.values():
        assert 2 <= len(set(cams)) <= 4 and 8 <= len(cams) <= 10
    query_cams = defaultdict(list)
    for pid, cam in query:
        query_cams[pid].append(cam)
    assert all(len(cams) == len(set(cams)) == 2 for cams in query_cams.values())

    # Every query has a gallery image of its identity from another camera.
    gallery_cams = defaultdict(set)
    for pid, cam in gallery:
        gallery_cams[pid].add(cam)
    for pid, cam in query:
        assert gallery_cams[pid] - {cam}, f"query {pid} c{cam} has no cross-camera match"

    # Distractors and junk only in the gallery.
    assert sum(pid == 0 for pid, _ in gallery) >= 2 and sum(pid == -1 for pid, _ in gallery) >= 2
    assert not {0, -1} & {pid for pid, _ in query}

    # Camera ranges: market c1-c6, duke c1-c8, and the duke-like domain really uses cameras beyond 6.
    cams = {cam for _, cam in train + query + gallery}
    assert min(cams) >= 1 and max(cams) <= CAMERAS[domain]
    if domain == "synthetic_duke":
        assert max(cams) > 6


def test_junk_names_start_with_minus_one(bench):
    names = [p.name for p in (bench / "synthetic_market" / "bounding_box_test").iterdir()]
    assert any(n.startswith("-1_c") for n in names) and any(n.startswith("0000_c") for n in names)


def test_domains_differ_in_style(bench):
    """The duke-like domain is darker and bluer than the market-like one (its style and clothing priors)."""

    def mean_rgb(domain: str) -> np.ndarray:
        files = sorted((bench / domain / "bounding_box_train").iterdir())
        return np.mean([np.asarray(Image.open(p), dtype=float).mean(axis=(0, 1)) for p in files], axis=0)

    market, duke = mean_rgb("synthetic_market"), mean_rgb("synthetic_duke")
    assert duke.mean() < market.mean() - 15
    assert duke[2] / duke[0] > market[2] / market[0]


def test_same_seed_is_byte_identical_and_other_seed_differs(bench, tmp_path):
    again = generate_benchmark(tmp_path / "again", num_ids=IDS, seed=3, height=HEIGHT, width=WIDTH)
    assert read_all(again) == read_all(bench)
    other = generate_benchmark(tmp_path / "other", num_ids=IDS, seed=4, height=HEIGHT, width=WIDTH)
    assert read_all(other) != read_all(bench)
    # Not only the names: the pixels differ too.
    first = sorted((bench / "synthetic_market" / "bounding_box_train").iterdir())[0]
    other_first = sorted((other / "synthetic_market" / "bounding_box_train").iterdir())[0]
    assert not np.array_equal(np.asarray(Image.open(first)), np.asarray(Image.open(other_first)))


# Written by the generator before it was split into modules; a refactor must not change a byte. JPEG and PNG
# bytes also depend on the Pillow/libjpeg build: after a Pillow upgrade, check the images by eye and re-pin.
PINNED_CLI = "d9d4bbacbf109da5344994e3f90f490c5452713f28a3c3f4c55061712582a146"
PINNED_CACHE = "3c4832da73e3781823e17a9b12c0d39f938fadedaf9909b671ec32e39cbf42c1"


def test_generated_bytes_are_pinned(tmp_path, capsys):
    """The CLI (both domains and the preview sheet) and a cache folder (its name and marker too)."""
    synthetic.main(["--out", str(tmp_path / "cli" / "bench"), "--ids", "6", "--seed", "0",
                    "--preview", str(tmp_path / "cli" / "sheet.png")])
    ensure_synthetic(tmp_path / "cache", num_ids=6, seed=1, height=48, width=24)
    assert (digest(tmp_path / "cli"), digest(tmp_path / "cache")) == (PINNED_CLI, PINNED_CACHE)


def test_bad_arguments_raise_one_line(tmp_path):
    for kwargs, word in (({"num_ids": 1}, "num_ids"), ({"seed": -1}, "seed"), ({"height": 8}, "height")):
        with pytest.raises(ValueError, match=word) as info:
            generate_benchmark(tmp_path, **kwargs)
        assert "\n" not in str(info.value)
    (tmp_path / "synthetic_market").mkdir()
    (tmp_path / "synthetic_market" / "old.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="synthetic_market"):
        generate_benchmark(tmp_path, num_ids=2, height=32, width=16)


def test_ensure_synthetic_generates_once_and_reuses(tmp_path, monkeypatch):
    root = ensure_synthetic(tmp_path, num_ids=2, seed=0, height=32, width=16)
    assert root.parent == tmp_path and (root / "COMPLETE").is_file()
    assert all((root / d / "query").is_dir() for d in SYNTHETIC_DOMAINS)
    image = sorted((root / "synthetic_duke" / "bounding_box_train").iterdir())[0]
    stamps = (image.stat().st_mtime_ns, (root / "COMPLETE").stat().st_mtime_ns)

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached benchmark")

    monkeypatch.setattr(writer, "generate_benchmark", fail)
    assert ensure_synthetic(tmp_path, num_ids=2, seed=0, height=32, width=16) == root
    assert (image.stat().st_mtime_ns, (root / "COMPLETE").stat().st_mtime_ns) == stamps
    # Other arguments live in another folder.
    with pytest.raises(AssertionError, match="regenerated"):
        ensure_synthetic(tmp_path, num_ids=2, seed=1, height=32, width=16)
    assert sorted(p.name for p in tmp_path.iterdir()) == [root.name]  # no staging folder left behind


def test_ensure_synthetic_uses_the_winner_of_a_race(tmp_path, monkeypatch):
    real = writer.generate_benchmark
    final = tmp_path / synthetic.benchmark_folder_name(2, 0, 32, 16)

    def generate_while_another_process_finishes(out, *args, **kwargs):
        real(out, *args, **kwargs)
        final.mkdir()
        (final / "COMPLETE").write_text("other\n")
        return out

    monkeypatch.setattr(writer, "generate_benchmark", generate_while_another_process_finishes)
    assert ensure_synthetic(tmp_path, num_ids=2, seed=0, height=32, width=16) == final
    assert (final / "COMPLETE").read_text() == "other\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]


def test_ensure_synthetic_leaves_nothing_after_a_crash(tmp_path, monkeypatch):
    def crash(out, *args, **kwargs):
        (Path(out) / "synthetic_market").mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(writer, "generate_benchmark", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        ensure_synthetic(tmp_path, num_ids=2, height=32, width=16)
    assert list(tmp_path.iterdir()) == []


def test_ensure_synthetic_refuses_a_foreign_incomplete_folder(tmp_path):
    (tmp_path / synthetic.benchmark_folder_name(2, 0, 32, 16)).mkdir()
    with pytest.raises(FileExistsError, match="COMPLETE"):
        ensure_synthetic(tmp_path, num_ids=2, height=32, width=16)


def test_cli_writes_and_reports(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reidmodel.data.synthetic", "--out", str(tmp_path / "b"), "--ids", "2",
         "--height", "32", "--width", "16", "--preview", str(tmp_path / "sheet.png")],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == list(SYNTHETIC_DOMAINS)
    assert "query 4 images / 2 ids" in lines[0] and "cameras 1-" in lines[1]
    assert Image.open(tmp_path / "sheet.png").size[0] > 16


@pytest.mark.parametrize(
    "argv, word",
    [
        (["--ids", "0"], "num_ids"),
        (["--height", "tall"], "--height"),
        ([], "--out"),
        (["--seed", "-3"], "seed"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv, word):
    if argv:
        argv = ["--out", str(tmp_path)] + argv
    with pytest.raises(SystemExit) as info:
        synthetic.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and word in err


def test_real_scale_writes_a_data_root_at_the_scaled_real_sizes(tmp_path):
    generate_benchmark(tmp_path, height=32, width=16, real_scale=0.006)
    for folder, dataset in (("Market-1501-v15.09.15", "market1501"), ("DukeMTMC-reID", "dukemtmc")):
        sizes = writer.REAL_SIZES[dataset].scaled(0.006)
        train, query, gallery = (parse(tmp_path / folder / split) for split in SPLITS)
        assert (len(train), len({p for p, _ in train})) == (sizes.train_images, sizes.train_ids)
        assert (len(query), len({p for p, _ in query})) == (sizes.query_images, sizes.query_ids)
        assert len(gallery) == sizes.gallery_images
        for pid, cam in query:  # Market protocol: a match of the same identity in another camera
            assert any(p == pid and c != cam for p, c in gallery)


@pytest.mark.parametrize("dataset", ["market1501", "dukemtmc"])
def test_the_real_size_plan_gives_the_real_counts(dataset):
    """The plan at full size, without rendering: every count as the real dataset's, every query answerable."""
    sizes, cameras = writer.REAL_SIZES[dataset], {"market1501": 6, "dukemtmc": 8}[dataset]
    pids = list(range(1, sizes.train_ids + sizes.query_ids + 1))
    test_ids = set(pids[sizes.train_ids:])
    images, queries, extras = writer._image_plan(sizes, pids, test_ids)
    rng = np.random.default_rng(0)
    sightings = {pid: writer._sightings(rng, cameras, images[pid]) for pid in pids}
    chosen = {pid: writer._queries(rng, sightings[pid], queries[pid]) for pid in test_ids}
    assert sum(len(sightings[p]) for p in pids if p not in test_ids) == sizes.train_images
    assert sum(map(len, chosen.values())) == sizes.query_images
    assert sum(len(sightings[p]) - len(chosen[p]) for p in test_ids) + sum(extras) == sizes.gallery_images
    for pid in test_ids:
        gallery_cams = {s[0] for s in sightings[pid] if s not in chosen[pid]}
        assert all(gallery_cams - {s[0]} for s in chosen[pid])
