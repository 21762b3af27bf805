"""The project's one error tree. Every error a user can meet is a `CbirError` whose message
says what to do; the CLI catches the base class once, the API maps it to a status code, and
the stages use the three families to choose between retrying and dead-lettering:

- `Transient` (a service down, a timeout, a lock held): retried with back-off, nothing is
  acknowledged meanwhile, so nothing is lost;
- `Permanent` (bad data, a value a store rejects, an invalid argument): retrying cannot help,
  so the item is refused (dead-lettered, or answered with a 4xx) with the reason;
- anything else is unexpected: a stage retries it a bounded number of times, then
  dead-letters the items with a summary so that the partition moves on.
"""

from __future__ import annotations


class CbirError(Exception):
    """Base of every error this project raises on purpose; the message carries the fix."""


class Transient(CbirError):
    """A failure that goes away by itself when the service is back: retry later."""


class Permanent(CbirError):
    """A failure that no retry mends: refuse the item with the reason."""


class ServiceUnavailable(Transient):
    """A service did not answer; the message says which, where, and what to do."""

    def __init__(
        self, service: str, address: str, setting: str, cause: BaseException | str
    ) -> None:
        self.service = service
        self.address = address
        why = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        super().__init__(
            f"{service} at {address} did not answer ({why}); "
            f"start it (`cbir stack up` for the local stack) or point {setting} at it"
        )


class RegistryBusy(Transient):
    """Another process held the generation registry's lock too long."""


class Rejected(Permanent):
    """A store refused a value for good (too long, out of range, malformed)."""


class InvalidValue(Permanent):
    """An argument or a field that does not parse; the message shows the expected form."""


class NotProvisioned(CbirError):
    """A store's tables or collections are not made yet (`cbir stack up` or the processors'
    first start make them)."""


class ModelNotServed(CbirError):
    """Triton is up but does not serve the model; the message says how to get it there."""


class ModelMismatch(CbirError):
    """Triton serves another version of the model than the vectors it must match."""


class ReplayError(CbirError):
    """A reindex or re-embed cannot go on; the message says what to do."""
