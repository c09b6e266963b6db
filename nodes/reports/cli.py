"""`heiti report RUN_DIR [RUN_DIR ...] [--baseline NODE_OR_RUN] --out report.html`.

Also honours `--title`, `--statistic mean|median` and `--tolerance FRACTION` when the parser offers
them (engine/cli.py owns the parser).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_INVALID = 0, 1


def main(args: argparse.Namespace) -> int:
    from heiti.nodes.reports.render import NoMeasurements, render, report_from_runs

    missing = [run for run in args.runs if not Path(run).exists()]
    if missing:
        for run in missing:
            print(f"heiti report: {run}: no such run folder", file=sys.stderr)
        return EXIT_INVALID
    try:
        report = report_from_runs([Path(r) for r in args.runs], baseline=getattr(args, "baseline", None) or "",
                                  title=getattr(args, "title", None) or "",
                                  statistic=getattr(args, "statistic", None) or "mean",
                                  tolerance=float(getattr(args, "tolerance", None) or 0.01))
    except NoMeasurements as err:
        print(f"heiti report: {err}", file=sys.stderr)
        return EXIT_INVALID
    except ValueError as err:  # an unknown --baseline
        print(f"heiti report: --baseline: {err}", file=sys.stderr)
        return EXIT_INVALID
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    out = Path(args.out)
    if out.is_dir() or str(args.out).endswith(("/", "\\")):
        out = out / "report.html"
    rendered = render(report, out)
    print(f"report: {rendered.html}")
    print(f"markdown: {rendered.markdown} (images and raw measurements in {rendered.files})")
    return EXIT_OK
