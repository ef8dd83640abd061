"""Re-ID dataset folders -> lists of (path, pid, camid) records, as torchreid's dataset classes do.

Conventions shared by every format:
- camera ids are 0-based (``c1`` -> 0);
- junk images (pid -1) are dropped everywhere;
- Market-style distractors (pid 0) stay in the gallery only, where they make retrieval harder;
- train pids are relabelled 0..N-1 (sorted by original pid) so they index a classifier, while
  query/gallery keep the original pids because evaluation only compares them for equality.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from reidmodel.messages import one_line

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
JUNK_PID = -1
DISTRACTOR_PID = 0

# Market layout: one folder per split; the pid and camera are parsed from the file name.
MARKET_SPLITS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
MARKET_NAME = re.compile(r"(-?\d+)_c(\d+)")
# MSMT17: list files of "relative/path.jpg PID" lines; the camera is the third "_" field of the name.
MSMT17_LISTS = {
    "train": ("list_train.txt", "list_val.txt"),
    "query": ("list_query.txt",),
    "gallery": ("list_gallery.txt",),
}
MSMT17_IMAGE_DIRS = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}

# Standard folder names under a data root, as torchreid looks them up.
STANDARD_FOLDERS = {
    "market1501": ("Market-1501-v15.09.15", "Market-1501"),
    "dukemtmc": ("DukeMTMC-reID",),
    "msmt17": ("MSMT17_V1", "MSMT17_V2", "MSMT17"),
}
FORMAT_NAMES = {"market": "market1501", "duke": "dukemtmc", "msmt17": "msmt17"}
FORMATS = ("auto", "market", "duke", "msmt17", "custom")


@dataclass(frozen=True)
class _Format:
    """What distinguishes the Market-layout datasets: their name and camera range."""

    name: str
    max_camera: int | None


_MARKET_LAYOUT_FORMATS = {
    "market": _Format("market1501", 6),
    "duke": _Format("dukemtmc", 8),
    "custom": _Format("custom", None),
}
MSMT17_MAX_CAMERA = 15


class DatasetError(ValueError):
    """A dataset problem, phrased as one line that names the path and the fix."""


@dataclass(frozen=True)
class ImageRecord:
    path: str
    pid: int
    camid: int


@dataclass
class ReIDDataset:
    name: str
    root: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]

    @property
    def num_train_pids(self) -> int:
        return _num_pids(self.train)

    @property
    def num_train_cams(self) -> int:
        return _num_cams(self.train)

    @property
    def num_query_pids(self) -> int:
        return _num_pids(self.query)

    @property
    def num_query_cams(self) -> int:
        return _num_cams(self.query)

    @property
    def num_gallery_pids(self) -> int:
        return _num_pids(self.gallery)

    @property
    def num_gallery_cams(self) -> int:
        return _num_cams(self.gallery)

    def summary(self) -> str:
        """The table re-ID toolkits print on load, to check a dataset at a glance."""
        rule = "  " + "-" * 40
        lines = [f"=> Loaded {self.name} from {self.root}", rule, "  subset   | # ids | # images | # cameras", rule]
        for split in ("train", "query", "gallery"):
            records = getattr(self, split)
            lines.append(f"  {split:<8} | {_num_pids(records):5d} | {len(records):8d} | {_num_cams(records):9d}")
        lines.append(rule)
        return "\n".join(lines)


def load_dataset(
    path: str | Path, format: str = "auto", name: str | None = None, verify_images: bool = False
) -> ReIDDataset:
    """Parse a dataset folder (or a root holding its standard folder) into records.

    ``format="auto"`` reads MSMT17 list files when present, else the Market layout; a Market-layout
    folder is Market-1501 or DukeMTMC-reID by its standard folder name, and "custom" (Market rules,
    no camera upper bound, named after its folder) otherwise.
    """
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r} for {path}: use one of {', '.join(FORMATS)}")
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetError(f"dataset folder {path} does not exist: {_expected_layout(format)}")
    folder, format = _locate(path, format)
    if format == "msmt17":
        dataset = _load_msmt17(folder)
    else:
        dataset = _load_market_layout(folder, format)
    if name is not None:
        dataset.name = name
    check_evaluable(dataset)
    if verify_images:
        for record in dataset.train + dataset.query + dataset.gallery:
            decode_image(record.path)
    return dataset


def resolve_dataset(name: str, root: str | Path) -> ReIDDataset:
    """A dataset by name: a standard one looked up under root, or any Market-layout folder ``root/<name>``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"data root {root} does not exist: set data.root to the folder holding the datasets")
    if name in STANDARD_FOLDERS:
        for folder in STANDARD_FOLDERS[name]:
            if (root / folder).is_dir():
                format = next(f for f, standard in FORMAT_NAMES.items() if standard == name)
                return load_dataset(root / folder, format=format, name=name)
        raise DatasetError(
            f"dataset {name!r} not found under {root}: expected one of "
            f"{_folders(STANDARD_FOLDERS[name])} there (found: {_listing(root)})"
        )
    if (root / name).is_dir():
        return load_dataset(root / name, format="custom", name=name)
    raise DatasetError(
        f"unknown dataset {name!r} under {root}: use one of {', '.join(STANDARD_FOLDERS)} "
        f"or the name of a Market-layout folder there (found: {_listing(root)})"
    )


def check_evaluable(dataset: ReIDDataset) -> None:
    """Some query must have a gallery image of its id from another camera (the Market protocol's valid match),
    or evaluation fails, and only after source pre-training. Reads the query and gallery ids, the labels that
    evaluation reads; never the training labels (a target domain's stay unread)."""
    cameras: dict[int, set[int]] = {}
    for record in dataset.gallery:
        cameras.setdefault(record.pid, set()).add(record.camid)
    if not any(cameras.get(query.pid, set()) - {query.camid} for query in dataset.query):
        raise DatasetError(
            f"{dataset.root}: all {len(dataset.query)} queries have no gallery match (a gallery image of the same "
            "id from another camera), so the dataset cannot be evaluated: add gallery images of the query ids "
            "from other cameras, or check that the query and gallery folders are not swapped or mixed up"
        )


def decode_image(path: str | Path) -> Image.Image:
    """The image's pixels in RGB, decoded in full: a file PIL cannot decode (truncated, corrupt, not an image) is a
    DatasetError naming it, never skipped. The loaders read images through it and the check at load decodes every
    image with it, so both accept exactly the same files."""
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"cannot decode image {path} ({one_line(exc)}): replace or delete the file") from exc


def relabel(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Map train pids to 0..N-1, sorted by original pid, so they index the classifier's outputs."""
    records = list(records)
    new_pid = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    return [ImageRecord(r.path, new_pid[r.pid], r.camid) for r in records]


def _locate(path: Path, format: str) -> tuple[Path, str]:
    """The dataset folder (path itself or one of its standard subfolders) and its concrete format."""
    folder = path
    if not (_is_msmt17(path) or _is_market_layout(path)):
        if format == "auto":
            standard = tuple(name for names in STANDARD_FOLDERS.values() for name in names)
        else:
            standard = STANDARD_FOLDERS.get(FORMAT_NAMES.get(format, ""), ())
        found = [path / name for name in standard if (path / name).is_dir()]
        if format == "auto" and len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise DatasetError(f"{path} holds several datasets ({names}): pass one of their folders instead")
        folder = found[0] if found else path  # explicit format: the first standard name wins, as in torchreid
    if format != "auto":
        return folder, format
    if _is_market_layout(folder) and not (folder / "list_train.txt").is_file():
        return folder, _detect_market_format(folder)
    if _is_msmt17(folder):
        return folder, "msmt17"
    raise DatasetError(f"{folder} is not a re-ID dataset folder: {_expected_layout('auto')}")


def _is_msmt17(folder: Path) -> bool:
    return (folder / "list_train.txt").is_file() or any((folder / d[0]).is_dir() for d in MSMT17_IMAGE_DIRS.values())


def _is_market_layout(folder: Path) -> bool:
    return any((folder / split).is_dir() for split in MARKET_SPLITS.values())


def _detect_market_format(folder: Path) -> str:
    """Market or Duke by their standard folder names; any other Market-layout folder is custom.

    File names do not decide: generated domains use Market-style names, and calling them market1501
    would mislabel them.
    """
    for format, standard in (("market", "market1501"), ("duke", "dukemtmc")):
        if folder.name in STANDARD_FOLDERS[standard]:
            return format
    return "custom"


def _load_market_layout(folder: Path, format: str) -> ReIDDataset:
    spec = _MARKET_LAYOUT_FORMATS[format]
    splits = {}
    for split, dirname in MARKET_SPLITS.items():
        split_dir = folder / dirname
        if not split_dir.is_dir():
            raise DatasetError(
                f"split folder {split_dir} is missing: {spec.name} needs {_folders(MARKET_SPLITS.values())}"
            )
        splits[split] = _parse_market_dir(split_dir, spec, keep_distractors=split == "gallery")
    name = folder.name if format == "custom" else spec.name
    return ReIDDataset(name, str(folder), relabel(splits["train"]), splits["query"], splits["gallery"])


def _parse_market_dir(split_dir: Path, spec: _Format, keep_distractors: bool) -> list[ImageRecord]:
    files = _image_files(split_dir)
    if not files:
        raise DatasetError(f"split folder {split_dir} has no images: fill it with {', '.join(IMAGE_SUFFIXES)} files")
    bad = [p.name for p in files if not MARKET_NAME.match(p.name)]
    if bad:
        raise DatasetError(
            f"{len(bad)} file name(s) in {split_dir} do not parse as PID_cCAM... (e.g. 0002_c1s1_000451_03.jpg): "
            f"{', '.join(bad[:3])}; rename or remove them"
        )
    records = []
    for file in files:
        pid, camera = map(int, MARKET_NAME.match(file.name).groups())
        _check_camera(camera, spec.max_camera, str(file), spec.name)
        if pid == JUNK_PID or (pid == DISTRACTOR_PID and not keep_distractors):
            continue
        records.append(ImageRecord(str(file), pid, camera - 1))
    return records


def _load_msmt17(folder: Path) -> ReIDDataset:
    version = next((v for v, dirs in MSMT17_IMAGE_DIRS.items() if (folder / dirs[0]).is_dir()), None)
    if version is None:
        layouts = " or ".join(f"{train}/ + {test}/" for train, test in MSMT17_IMAGE_DIRS.values())
        raise DatasetError(f"MSMT17 folder {folder} has no image folders: expected {layouts} next to the list files")
    train_dir, test_dir = (folder / d for d in MSMT17_IMAGE_DIRS[version])
    splits = {}
    for split, list_names in MSMT17_LISTS.items():
        image_dir = train_dir if split == "train" else test_dir
        if not image_dir.is_dir():
            raise DatasetError(f"split folder {image_dir} is missing: MSMT17_{version} needs it for {split}")
        splits[split] = [r for n in list_names for r in _parse_msmt17_list(folder / n, image_dir)]
    return ReIDDataset("msmt17", str(folder), relabel(splits["train"]), splits["query"], splits["gallery"])


def _parse_msmt17_list(list_file: Path, image_dir: Path) -> list[ImageRecord]:
    if not list_file.is_file():
        raise DatasetError(f"list file {list_file} is missing: MSMT17 needs {', '.join(_all_list_names())}")
    records = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        name_fields = Path(fields[0]).name.split("_")
        parses = len(fields) == 2 and fields[1].lstrip("-").isdigit()
        if not parses or len(name_fields) < 3 or not name_fields[2].isdigit():
            raise DatasetError(
                f"{list_file} line {number} does not parse: expected 'DIR/PID_INDEX_CAM_....jpg PID', "
                f"got {line.strip()!r}; fix or remove the line"
            )
        pid, camera = int(fields[1]), int(name_fields[2])
        _check_camera(camera, MSMT17_MAX_CAMERA, f"{list_file} line {number}", "msmt17")
        if pid != JUNK_PID:
            records.append(ImageRecord(str(image_dir / fields[0]), pid, camera - 1))
    if not records:
        raise DatasetError(f"list file {list_file} lists no images: restore it from the MSMT17 archive")
    return records


def _check_camera(camera: int, max_camera: int | None, where: str, dataset: str) -> None:
    if camera < 1 or (max_camera is not None and camera > max_camera):
        allowed = f"1-{max_camera}" if max_camera is not None else ">= 1"
        if camera < 1:
            fix = "cameras are numbered from 1 (c1 is the first); fix the name"
        elif dataset == "msmt17":
            fix = "fix the name in the list file"
        else:
            fix = f"this is not {dataset}: load it with format='custom' (CLI: --format custom)"
        raise DatasetError(f"camera {camera} in {where} is out of range for {dataset} (cameras {allowed}): {fix}")


def _image_files(folder: Path) -> list[Path]:
    """The image files of a split folder; a symbolic link named like an image that leads nowhere (its target
    is gone, or links loop) is an error, never skipped."""
    named = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    broken = [p for p in named if p.is_symlink() and not p.exists()]
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise DatasetError(f"{broken[0]} is a broken symbolic link{more}: it points to {os.readlink(broken[0])}, "
                           "which is missing or loops: fix the link or delete it")
    return [p for p in named if p.is_file()]


def _num_pids(records: list[ImageRecord]) -> int:
    return len({r.pid for r in records})


def _num_cams(records: list[ImageRecord]) -> int:
    return len({r.camid for r in records})


def _all_list_names() -> list[str]:
    return [n for names in MSMT17_LISTS.values() for n in names]


def _expected_layout(format: str) -> str:
    market = f"a folder with {_folders(MARKET_SPLITS.values())} (Market layout)"
    msmt = f"a folder with train/ + test/ (or mask_train_v2/ + mask_test_v2/) and {', '.join(_all_list_names())}"
    if format == "msmt17":
        return f"expected {msmt}"
    if format == "auto":
        return f"expected {market}, or {msmt}"
    return f"expected {market}"


def _folders(names: Iterable[str]) -> str:
    return ", ".join(f"{name}/" for name in names)


def _listing(root: Path) -> str:
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
    return ", ".join(names) if names else "nothing"
