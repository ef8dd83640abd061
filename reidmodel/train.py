"""Single-experiment CLI: ``python -m reidmodel.train --config FILE.yaml --set ula.eps=0.8``.

Prints one line of metrics per cycle and writes them to ``<out>/cycles.csv`` (per-epoch losses to
``<out>/history.csv``). ``--resume`` continues from the last finished cycle in ``<out>``; without it an ``--out``
that already holds a run is refused rather than overwritten. Exit codes: 0 done, 1 the training diverged,
2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from reidmodel.config import ConfigError, load_config, to_yaml
from reidmodel.cycle_metrics import metric
from reidmodel.data import DatasetError

COLUMNS = ("cycle", "target_mAP", "target_R1", "target_R5", "target_R10", "source_mAP",
           "ula_num_classes", "ula_num_labelled", "ula_precision", "time_s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reidmodel.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML config; its 'preset' key picks the base (default: cpu)")
    parser.add_argument("--preset", default=None, help="base preset when --config has none: cpu (default) or paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set ula.eps=0.8 (repeatable)")
    parser.add_argument("--out", type=Path, default=Path("results/runs/experiment"), help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from the last cycle saved in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = _load(args)
        resume_from = _last_checkpoint(args.out) if args.resume else None
        if args.resume and resume_from is None:
            raise ConfigError(f"--resume given but {args.out}/checkpoints holds no finished cycle: drop --resume")
        _check_out(args.out, args.resume)
    except (ConfigError, DatasetError, ValueError) as exc:
        return _fail(exc, 2)
    # torch is imported only now, so that bad input fails in a fraction of a second
    from reidmodel.engine import DivergenceError
    from reidmodel.pipeline import run_experiment

    (args.out / "config.yaml").write_text(to_yaml(config))
    print(_row(COLUMNS))

    def report(metrics, checkpoint_dir):
        print(_row(metric(key).format(metrics.get(key)) for key in COLUMNS), flush=True)
        for name in ("cycles.csv", "history.csv"):
            shutil.copyfile(checkpoint_dir / name, args.out / name)

    try:
        run_experiment(config, report, workdir=args.out, resume_from=resume_from, progress=not args.quiet)
    except (ConfigError, DatasetError, ValueError) as exc:
        return _fail(exc, 2)
    except DivergenceError as exc:
        return _fail(exc, 1)
    print(f"wrote {args.out / 'cycles.csv'}")
    return 0


def _fail(exc: Exception, code: int) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return code


def _load(args):
    config = load_config(args.config, args.overrides, default_preset=args.preset or "cpu")
    if args.preset and args.config is not None and config.preset != args.preset:
        raise ConfigError(f"--preset {args.preset} disagrees with preset: {config.preset} in {args.config}: drop one")
    if config.model.pretrained not in ("none", "imagenet"):
        from reidmodel.model.backbone import build_backbone

        build_backbone(config.model.backbone, config.model.pretrained)  # a wrong file fails before data is read
    return config


def _check_out(out: Path, resume: bool) -> None:
    """A run's folder is its own: reusing it needs --resume, so an earlier run is never overwritten. A folder
    holding only config.yaml is a run that stopped before training (bad data, say) and may be reused."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: pass a folder for the run's outputs")
    if not resume and out.is_dir() and any(path.name != "config.yaml" for path in out.iterdir()):
        raise ConfigError(f"--out {out} already holds a run: pass --resume to continue it or another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out} cannot be created ({exc.strerror}): pass a folder you can write") from exc


def _last_checkpoint(out: Path) -> Path | None:
    folders = sorted(p for p in (out / "checkpoints").glob("cycle_*") if not p.name.endswith(".tmp"))
    return folders[-1] if folders else None


def _row(cells) -> str:
    return " ".join(f"{cell:>14}" for cell in cells)


if __name__ == "__main__":
    sys.exit(main())
