"""The consoles the commands print to."""

from __future__ import annotations

import sys

from rich.console import Console

# wide enough for the tables when output is not a terminal (CI logs, pipes)
console = Console(width=None if sys.stdout.isatty() else 120)
errors = Console(stderr=True)
