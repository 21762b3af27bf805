"""The console command: `cbir <area> <action>`. Run `cbir --help` for the list."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.markup import escape

from cbir.cli import (
    bench,
    evaluate,
    ingest,
    model,
    ops,
    pipeline,
    replay,
    serve,
    stack,
    train,
)
from cbir.domain.errors import CbirError
from cbir.logs import configure_logging
from cbir.output import errors
from cbir.settings import get_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cbir", description=__doc__)
    areas = parser.add_subparsers(dest="area", required=True)
    for area in (stack, ops, model, ingest, pipeline, replay, serve, evaluate, train, bench):
        area.register(areas)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        return int(args.run(args))
    except CbirError as exc:  # every error a user can meet says what to do
        # the message is plain text: brackets in it (`.[export]`) are not markup
        errors.print(f"[red]error[/]: {escape(str(exc))}", highlight=False, markup=True)
        return 2
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
