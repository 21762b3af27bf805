"""`cbir serve`: the query API and web page (uvicorn)."""

from __future__ import annotations

import argparse
from typing import Any

from cbir.settings import get_settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from query_api.app import create_app

    settings = get_settings()
    host = args.host or settings.api.host
    port = args.port or settings.api.port
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level=args.log_level,
        access_log=args.access_log,
        # the log configuration of `cbir` (structured) stays in force
        log_config=None,
        http=args.http,
        loop=args.loop,
    )
    return 0


def register(areas: Any) -> None:
    serve = areas.add_parser("serve", help="run the query API and web page")
    serve.add_argument("--host", help="default: CBIR_API__HOST")
    serve.add_argument("--port", type=int, help="default: CBIR_API__PORT")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--http",
        default="auto",
        choices=["auto", "httptools", "h11"],
        help="HTTP parser (auto: httptools, installed with the project)",
    )
    serve.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "uvloop", "asyncio"],
        help="event loop (auto: uvloop, installed with the project)",
    )
    serve.set_defaults(run=_serve)
