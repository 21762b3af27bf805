"""The real pretrained model that works offline (../shared/models/mobilenet_v1_embed.onnx):
MobileNet V1 cut at the global average pool, 1024-d. Its declared preprocessing, from the
model's README: RGB, squashed to 224x224 with bilinear resampling, (pixel - 128) / 128.

The CLI equivalent: cbir model export mobilenet --onnx FILE --resize squash --scale 0.0078125
--offset -1
"""

from __future__ import annotations

from pathlib import Path

from cbir.models.export import export_model
from cbir.models.runtime import ModelSpec, Pooling, Preprocessing

PREPROCESSING = Preprocessing(
    input_size=224,
    resize="squash",
    interpolation="bilinear",
    scale=1 / 128,
    mean=(1.0, 1.0, 1.0),
    std=(1.0, 1.0, 1.0),
)


def export_shared_mobilenet(
    repository: Path, onnx_file: Path, name: str = "mobilenet", instances: int | None = None
) -> ModelSpec:
    return export_model(
        repository,
        name,
        1,
        onnx_file=onnx_file,
        preprocessing=PREPROCESSING,
        pooling=Pooling("gap"),
        instances=instances,
    )
