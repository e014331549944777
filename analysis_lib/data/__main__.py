"""`python -m analysis_lib.data check --root DATA [--deep]`: report the datasets found under DATA."""
from __future__ import annotations

import argparse
import logging
import sys

from .check import check_datasets, format_report
from .errors import DatasetError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis_lib.data")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="report which datasets are usable and why not")
    check.add_argument("--root", required=True, help="data root holding imagenet/, dtd/, ...")
    check.add_argument("--datasets", nargs="+", help="names to check (default: all)")
    check.add_argument("--allow-missing-images", action="store_true",
                       help="skip listed images that are missing instead of failing")
    check.add_argument("--deep", action="store_true",
                       help="also decode every listed image and list those that are corrupt, empty "
                            "or not images (reads every file: minutes for ImageNet)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = check_datasets(args.root, args.datasets,
                                allow_missing_images=args.allow_missing_images, deep=args.deep)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    failed = [r for r in report
              if r.status == "broken" or (args.datasets and r.status == "missing")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
