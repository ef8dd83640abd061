"""Looking at a written benchmark: a one-line summary per domain and a contact sheet of images."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from reidmodel.data.synthetic.writer import NAME_PATTERN, SPLITS


def describe_domain(root: Path) -> str:
    """One line of image and identity counts per split, parsed from the file names."""
    parts = []
    for split in SPLITS:
        names = [NAME_PATTERN.match(p.name) for p in sorted((Path(root) / split).glob("*.jpg"))]
        pids = [int(m.group(1)) for m in names if m]
        people = {p for p in pids if p > 0}
        extra = ""
        if split == "bounding_box_test":
            extra = f" (+{pids.count(0)} distractors, +{pids.count(-1)} junk)"
        parts.append(f"{split} {len(pids)} images / {len(people)} ids{extra}")
    cams = {int(m.group(2)) for split in SPLITS for p in (Path(root) / split).glob("*.jpg")
            if (m := NAME_PATTERN.match(p.name))}
    return f"{Path(root).name}: " + ", ".join(parts) + f", cameras {min(cams)}-{max(cams)}"


def write_preview(root: Path, out_png: Path, ids_per_domain: int = 6, images_per_id: int = 6,
                  zoom: int = 1) -> Path:
    """A contact sheet, one row per identity across cameras (train split), then distractors and junk."""
    rows: list[tuple[str, list[Path]]] = []
    for domain in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        short = domain.name.removeprefix("synthetic_")
        by_pid: dict[str, list[Path]] = {}
        for path in sorted((domain / "bounding_box_train").glob("*.jpg")):
            by_pid.setdefault(path.name.split("_")[0], []).append(path)
        for pid in sorted(by_pid)[:ids_per_domain]:
            # Spread the chosen images over cameras: take every camera's first image before any second one.
            ordered = sorted(by_pid[pid], key=lambda p: (int(p.name.split("_")[3][:2]), p.name))
            rows.append((f"{short} {pid}", ordered[:images_per_id]))
        gallery = sorted((domain / "bounding_box_test").glob("*.jpg"))
        rows.append((f"{short} 0/-1", [p for p in gallery if p.name.startswith("0000_")][:3]
                     + [p for p in gallery if p.name.startswith("-1_")][:3]))
    first = Image.open(rows[0][1][0])
    cell_w, cell_h = first.width * zoom, first.height * zoom
    label_w = 90
    sheet = Image.new("RGB", (label_w + images_per_id * (cell_w + 2), len(rows) * (cell_h + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for r, (label, paths) in enumerate(rows):
        y = r * (cell_h + 2)
        draw.text((4, y + cell_h // 2 - 6), label, fill=(0, 0, 0))
        for c, path in enumerate(paths):
            with Image.open(path) as image:
                sheet.paste(image.resize((cell_w, cell_h), Image.NEAREST), (label_w + c * (cell_w + 2), y))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png)
    return out_png
