"""`cbir provision | check | config`: work on any deployment, local or not."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from cbir.output import console
from cbir.settings import get_settings


def _provision(args: argparse.Namespace) -> int:
    from cbir.adapters.provisioning import provision

    done = provision(get_settings())
    console.print(f"topics created: {', '.join(done.topics_created) or 'none (all present)'}")
    console.print(f"bucket created: {'yes' if done.bucket_created else 'no (present)'}")
    applied = ", ".join(map(str, done.migrations_applied)) or "none (schema current)"
    console.print(f"migrations applied: {applied}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from cbir.adapters.health import check_all

    table = Table("service", "result", "ms", "detail", box=None)
    results = check_all(get_settings())
    for result in results:
        verdict = "[green]ok[/]" if result.ok else "[red]failed[/]"
        table.add_row(result.service, verdict, f"{result.latency_ms:.0f}", result.detail)
    console.print(table)
    return 0 if all(r.ok for r in results) else 1


def _config(args: argparse.Namespace) -> int:
    from cbir.settings import describe_settings, settings_markdown

    if args.markdown:
        print(settings_markdown())
        return 0
    docs = describe_settings()
    table = Table("variable", "default", "what it is", box=None)
    for doc in docs:
        table.add_row(doc.variable, doc.default, doc.description)
    console.print(table)
    return 0


def register(areas: Any) -> None:
    provision = areas.add_parser(
        "provision",
        help="create the topics, the bucket and the tables in any deployment "
        "(idempotent; `stack up` does it for the local stack)",
    )
    provision.set_defaults(run=_provision)

    check = areas.add_parser(
        "check", help="one real request to every service (write, read, delete where it can)"
    )
    check.set_defaults(run=_check)

    config = areas.add_parser("config", help="every setting: its variable, default, meaning")
    config.add_argument(
        "--markdown", action="store_true", help="as the table in docs/CONFIGURATION.md"
    )
    config.set_defaults(run=_config)
