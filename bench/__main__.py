"""``python -m bench ...`` is ``resolutionflow bench ...``."""

from __future__ import annotations

import argparse
import sys

from bench.cli import add_arguments


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    add_arguments(parser)
    args = parser.parse_args()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
