"""Metric learning: descriptors trained on labelled images (`cbir train`)."""

from __future__ import annotations

from cbir.domain.errors import CbirError


class TorchMissing(CbirError):
    """Training needs torch, which serving does not."""


def need_torch() -> None:
    """A clear error where torch is missing (this package's other modules import it)."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise TorchMissing(
            f"training needs torch ({exc}): pip install -e '.[export]' (scripts/demo.sh and "
            "scripts/test.sh install it)"
        ) from exc
