"""Writes tiny fake re-ID trees (8x4 JPEGs) in every supported layout, with known counts."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

MARKET_FILES = {
    "bounding_box_train": [
        "0002_c1s1_000451_03.jpg",
        "0002_c1s1_000551_01.jpg",
        "0002_c2s1_000301_01.jpg",
        "0007_c3s1_000101_01.jpg",
        "0007_c3s2_000201_01.jpg",
        "0010_c6s1_000101_01.jpg",
        "-1_c1s1_000001_00.jpg",  # junk
        "0000_c2s1_000001_00.jpg",  # distractor: never trained on
    ],
    "query": [
        "0002_c4s1_000001_00.jpg",
        "0007_c5s1_000001_00.jpg",
        "0000_c1s1_000002_00.jpg",
        "-1_c1s1_000003_00.jpg",
    ],
    "bounding_box_test": [
        "0002_c1s1_000002_00.jpg",
        "0007_c3s1_000002_00.jpg",
        "0015_c5s1_000001_00.jpg",
        "0000_c6s1_000001_00.jpg",  # distractor: stays in the gallery
        "-1_c2s1_000001_00.jpg",
    ],
}

DUKE_FILES = {
    "bounding_box_train": ["0001_c2_f0000001.jpg", "0001_c8_f0000002.jpg", "0005_c7_f0000003.jpg"],
    "query": ["0001_c1_f0000010.jpg", "0005_c3_f0000011.jpg"],
    "bounding_box_test": ["0001_c5_f0000020.jpg", "0005_c8_f0000021.jpg", "0009_c4_f0000022.jpg"],
}

# Cameras beyond Market's 6 and names that are neither Market nor Duke style.
CUSTOM_FILES = {
    "bounding_box_train": ["0001_c1_000001.jpg", "0001_c12_000002.jpg", "0003_c9_000003.jpg", "0003_c9_000004.jpg"],
    "query": ["0001_c2_000005.jpg", "0003_c3_000006.jpg"],
    "bounding_box_test": ["0001_c12_000007.jpg", "0003_c1_000008.jpg", "0000_c4_000009.jpg"],
}

# CUSTOM_FILES with a gallery that matches no query: id 0001 is seen by the query's own camera only, 0003 not at all.
UNMATCHED_FILES = {**CUSTOM_FILES, "bounding_box_test": ["0001_c2_000007.jpg", "0005_c1_000008.jpg"]}

MSMT17_LISTS = {
    "list_train.txt": [
        "0000/0000_000_01_0303morning_0015_0.jpg 0",
        "0000/0000_001_15_0303morning_0016_0.jpg 0",
        "0003/0003_000_07_0303noon_0001_0.jpg 3",
    ],
    "list_val.txt": ["0001/0001_000_02_0303morning_0100_0.jpg 1"],
    "list_query.txt": [
        "0000/0000_000_03_0303afternoon_0001_0.jpg 0",
        "0002/0002_000_04_0303afternoon_0002_0.jpg 2",
    ],
    "list_gallery.txt": [
        "0000/0000_001_05_0303afternoon_0003_0.jpg 0",
        "0002/0002_001_15_0303afternoon_0004_0.jpg 2",
        "0004/0004_000_01_0303afternoon_0005_0.jpg 4",
    ],
}


def write_jpeg(path: Path, color: tuple[int, int, int] = (120, 60, 200), size: tuple[int, int] = (4, 8)) -> Path:
    """size is PIL's (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, quality=95)
    return path


def write_market_layout(folder: Path, files: dict[str, list[str]]) -> Path:
    for split, names in files.items():
        (folder / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            write_jpeg(folder / split / name)
    return folder


def write_market(root: Path) -> Path:
    folder = write_market_layout(root / "Market-1501-v15.09.15", MARKET_FILES)
    (folder / "bounding_box_test" / "Thumbs.db").write_bytes(b"not an image, ignored")
    return folder


def write_duke(root: Path) -> Path:
    return write_market_layout(root / "DukeMTMC-reID", DUKE_FILES)


def write_custom(root: Path, name: str = "synthetic_market") -> Path:
    return write_market_layout(root / name, CUSTOM_FILES)


def write_msmt17(root: Path, version: str = "V1") -> Path:
    folder = root / f"MSMT17_{version}"
    train_dir, test_dir = ("train", "test") if version == "V1" else ("mask_train_v2", "mask_test_v2")
    for list_name, lines in MSMT17_LISTS.items():
        image_dir = folder / (train_dir if list_name in ("list_train.txt", "list_val.txt") else test_dir)
        for line in lines:
            write_jpeg(image_dir / line.split()[0])
        (folder / list_name).write_text("\n".join(lines) + "\n")
    return folder
