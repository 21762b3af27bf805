"""Model ids: what the vectors of an index mean.

An embedding model exported by `cbir model export` is identified by
`name:version:<dim>d:pooling:fingerprint` (the Triton model's name, its version, the vector
dimension, the pooling, and a fingerprint of the weights and preprocessing), e.g.
`mobilenet:1:1024d:gap:0ec2d6d83618` (`cbir/models/runtime.py` writes it, inside Triton
where this package is not). Two vectors are
comparable only when their model ids are equal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cbir.domain.errors import InvalidValue


@dataclass(frozen=True, order=True)
class ModelId:
    name: str  # the Triton model that serves it
    version: str
    dim: int
    pooling: str
    fingerprint: str

    @classmethod
    def parse(cls, text: str) -> ModelId:
        parts = text.split(":")
        if len(parts) != 5 or not all(parts) or not re.fullmatch(r"[0-9]+d", parts[2]):
            raise InvalidValue(
                f"{text!r} is not a model id (name:version:<dim>d:pooling:fingerprint, as "
                "`cbir model list` shows)"
            )
        name, version, dim, pooling, fingerprint = parts
        return cls(name, version, int(dim[:-1]), pooling, fingerprint)

    def __str__(self) -> str:
        return f"{self.name}:{self.version}:{self.dim}d:{self.pooling}:{self.fingerprint}"

    @property
    def triton_model(self) -> str:
        """The Triton model that embeds with it (export names the id after the model)."""
        return self.name

    @property
    def slug(self) -> str:
        """`name_vVERSION_FINGERPRINT8`: a part of Milvus collection and Kafka topic names."""
        return re.sub(r"[^A-Za-z0-9_]", "_", f"{self.name}_v{self.version}_{self.fingerprint[:8]}")


@dataclass(frozen=True)
class ModelIdentity:
    """What a served model's vectors mean, as its Triton config declares."""

    name: str
    model_id: str
    dim: int
    pooling: str
    fingerprint: str
    max_batch_size: int
    pairs_with: str = ""  # a text tower: the model id of the image model whose space it shares


TEXT_SUFFIX = "-text"


def text_entry(image_entry: str) -> str:
    """The Triton entry of an image model's text tower (`cbir model export --clip`)."""
    return f"{image_entry}{TEXT_SUFFIX}"
