"""The validator benchmark across studies: ``python -m study.validators --study A --study B``.

Reads the studies from MLflow (study.report's loader) and prints, and writes to ``RESULTS_DIR/A/validators.md``
or ``--out``, how well each label-free validator ranks their trials and cycles by the final target test mAP:
it reads target labels on purpose (study/report/validators.py says what each statistic is).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from study.report.validators import RESAMPLES, benchmark_lines, trials_with_validators


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m study.validators", description=__doc__.splitlines()[0])
    parser.add_argument("--study", action="append", required=True, help="a study (MLflow experiment); repeat it")
    parser.add_argument("--results-dir", type=Path, default=Path("results"), help="as for study.report")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: sqlite:///RESULTS_DIR/mlflow.db)")
    parser.add_argument("--out", type=Path, help="where the Markdown goes (default: RESULTS_DIR/FIRST_STUDY/"
                        "validators.md; a later study.report of that study replaces its folder)")
    parser.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap resamples (default {RESAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="the bootstrap's seed (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from study.paths import default_tracking_uri
    from study.publish import check_stores
    from study.report.load import LoadedStudy
    from study.report.sections import machine_line

    results_dir = args.results_dir.expanduser().resolve()
    tracking_uri = args.tracking_uri or default_tracking_uri(results_dir)
    try:
        if args.resamples < 1:
            raise ValueError(f"--resamples {args.resamples} is out of range: pass a count >= 1, e.g. 1000")
        check_stores(results_dir, tracking_uri, default_store=args.tracking_uri is None)
        studies = [LoadedStudy.load(name, tracking_uri) for name in dict.fromkeys(args.study)]
        if not any(trials_with_validators(study) for study in studies):
            raise ValueError(f"no finished trial of {', '.join(args.study)} logged a validator: run studies on a "
                             "version that logs them (reidmodel.validators)")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "study.validators", *(argv if argv is not None else sys.argv[1:])])
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([f"Written by `{command}` on {now} ({machine_line()}).", "",
                      f"# Validator benchmark: {', '.join(s.name for s in studies)}", "",
                      *benchmark_lines(studies, args.resamples, args.seed)]) + "\n"
    out = args.out or results_dir / studies[0].name / "validators.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
