"""`cbir stack ...`: the local services."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.table import Table

from cbir.output import console
from cbir.settings import get_settings
from cbir.stack.errors import StackError
from cbir.stack.launcher import Launcher, ServiceState
from cbir.stack.process import tail


def _states_table(states: Sequence[ServiceState], data_root: Path) -> Table:
    table = Table(
        "service",
        "health",
        "ports",
        "pid",
        "memory",
        "restarts",
        "data",
        box=None,
        caption=f"data under {data_root}",
        caption_justify="left",
    )
    colours = {"healthy": "green", "unhealthy": "yellow", "stopped": "red"}
    for state in states:
        ports = ", ".join(f"{p.label} {p.number}" for p in state.ports[:3])
        if len(state.ports) > 3:
            ports += f" (+{len(state.ports) - 3} internal)"
        health = f"[{colours[state.health]}]{state.health}[/]"
        if state.detail:
            health += f" ({state.detail})"
        memory = f"{state.rss_bytes / 2**20:.0f} MiB" if state.rss_bytes else "-"
        table.add_row(
            state.name,
            health,
            ports,
            str(state.pid or "-"),
            memory,
            str(state.restarts),
            str(state.data_dir.relative_to(data_root)),
        )
    return table


def _stack(args: argparse.Namespace) -> int:
    launcher = Launcher(get_settings(), only=args.only or ())
    started = time.monotonic()
    if args.action == "install":
        seconds = launcher.install()
        for name, took in seconds.items():
            console.print(f"{name:8} installed ({took:.1f} s)")
        console.print(f"stack home: {launcher.layout.home} ({time.monotonic() - started:.1f} s)")
        return 0
    if args.action == "up":
        states = launcher.up()
        console.print(_states_table(states, launcher.layout.data))
        console.print(f"logs: {launcher.layout.logs}   up in {time.monotonic() - started:.1f} s")
        return 0 if all(s.health == "healthy" for s in states) else 1
    if args.action == "down":
        for name, was_running in launcher.down().items():
            console.print(f"{name:8} {'stopped' if was_running else 'was not running'}")
        return 0
    if args.action == "status":
        states = launcher.status()
        if args.json:
            print(
                json.dumps(
                    [
                        {
                            "service": s.name,
                            "health": s.health,
                            "pid": s.pid,
                            "ports": {p.label: p.number for p in s.ports},
                            "rss_bytes": s.rss_bytes,
                            "data_dir": str(s.data_dir),
                            "detail": s.detail,
                            "restarts": s.restarts,
                        }
                        for s in states
                    ],
                    indent=2,
                )
            )
        else:
            console.print(_states_table(states, launcher.layout.data))
        watching = launcher.watchdog.record()
        console.print(
            f"watchdog: running (pid {watching.pid}), restarts what exits"
            if watching
            else "watchdog: not running (`cbir stack up` starts it; CBIR_STACK__SUPERVISE)"
        )
        return 0 if all(s.health == "healthy" for s in states) else 1
    if args.action == "logs":
        log_file = launcher.service(args.service).process.log_file
        if not log_file.exists():
            raise StackError(args.service, f"no log at {log_file}", "start it with `cbir stack up`")
        print(tail(log_file, args.lines))
        if args.follow:
            with log_file.open() as handle:
                handle.seek(0, 2)
                while True:
                    line = handle.readline()
                    if line:
                        print(line, end="")
                    else:
                        time.sleep(0.3)
        return 0
    raise AssertionError(args.action)


def register(areas: Any) -> None:
    stack = areas.add_parser(
        "stack",
        help="the local services (Kafka, MinIO, Milvus, MariaDB, "
        "Redis, Triton) as plain processes on 127.0.0.1",
    )
    actions = stack.add_subparsers(dest="action", required=True)
    for name, text in (
        ("install", "install every server into the stack home (idempotent)"),
        ("up", "start the services, wait until ready, create topics/bucket/tables"),
        ("down", "stop the services this launcher started; data stays"),
        ("status", "healthy / unhealthy / stopped per service"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument(
            "--only",
            action="append",
            metavar="SERVICE",
            help="act on this service only (repeatable)",
        )
        if name == "status":
            sub.add_argument("--json", action="store_true", help="machine-readable output")
    logs = actions.add_parser("logs", help="print the last lines of a service's log")
    logs.add_argument("service")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true")
    logs.set_defaults(only=None)
    stack.set_defaults(run=_stack)
