"""``python -m reidmodel.data.synthetic --out DIR``: write the benchmark anywhere, optionally with a preview."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import NoReturn

from reidmodel.data.datasets import STANDARD_FOLDERS
from reidmodel.data.synthetic.preview import describe_domain, write_preview
from reidmodel.data.synthetic.styles import DEFAULT_STYLES
from reidmodel.data.synthetic.writer import STANDS_IN_FOR, generate_benchmark


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = _OneLineParser(prog="python -m reidmodel.data.synthetic",
                            description="Write the synthetic two-domain re-ID benchmark in Market-1501 layout.")
    parser.add_argument("--out", type=Path, required=True, help="folder that receives one folder per domain")
    parser.add_argument("--ids", type=int, default=120, help="identities per split and domain")
    parser.add_argument("--size", choices=("small", "real"), default="small",
                        help="small: --ids identities of 8-10 images; real: the domains stand in for Market-1501 "
                             "(751 training ids, 12,936 / 3,368 / 19,732 images) and DukeMTMC-reID (702 ids, "
                             "16,522 / 2,228 / 17,661), under their folder names: a data root for --data-root")
    parser.add_argument("--scale", type=float, default=1.0, help="--size real: this fraction of the real sizes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--preview", type=Path, help="also write a contact sheet PNG here")
    args = parser.parse_args(argv)
    try:
        out = generate_benchmark(args.out, num_ids=args.ids, seed=args.seed, height=args.height, width=args.width,
                                 real_scale=args.scale if args.size == "real" else None)
    except (ValueError, FileExistsError) as exc:
        parser.error(str(exc))
    for style in DEFAULT_STYLES:
        folder = STANDARD_FOLDERS[STANDS_IN_FOR[style.name]][0] if args.size == "real" else style.name
        print(describe_domain(out / folder))
    if args.preview:
        print(f"preview: {write_preview(out, args.preview)}")
    return 0
