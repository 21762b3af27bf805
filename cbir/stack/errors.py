"""Errors a user of the launcher can meet. Each names the service, the cause and the fix."""

from __future__ import annotations

from cbir.domain.errors import CbirError


class StackError(CbirError):
    """A launcher failure, printed to the user as it is."""

    def __init__(self, service: str, reason: str, fix: str, log_tail: str = "") -> None:
        self.service = service
        self.reason = reason
        self.fix = fix
        self.log_tail = log_tail
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.service}: {self.reason}\n  fix: {self.fix}"
        if self.log_tail:
            indented = "\n".join(f"    {line}" for line in self.log_tail.splitlines())
            text += f"\n  last lines of its log:\n{indented}"
        return text
