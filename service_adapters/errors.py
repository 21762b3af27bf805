"""The error every adapter raises when its service cannot be reached or refuses the request."""

from __future__ import annotations


class ServiceUnavailable(Exception):
    """A service did not answer; the message says which, where, and what to do."""

    def __init__(self, service: str, address: str, setting: str, cause: BaseException) -> None:
        self.service = service
        self.address = address
        super().__init__(
            f"{service} at {address} did not answer ({type(cause).__name__}: {cause}); "
            f"start it (`cbir stack up` for the local stack) or point {setting} at it"
        )


class RegistryBusy(Exception):
    """Another process held the generation registry's lock too long; the message says what
    to do."""
