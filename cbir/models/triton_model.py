"""Triton Python-backend model: encoded images in, embeddings out.

The export copies this file into a model entry as `<version>/model.py`, next to
`embedding_runtime.py` (a copy of runtime.py); Triton puts the version folder on sys.path.

Inputs:  IMAGE  BYTES [-1, 1]   encoded image (JPEG, PNG, WebP, BMP, GIF)
   or    TENSOR FP32  [-1, 3, S, S]  already preprocessed (the float-tensor variant)
   or    TEXT   BYTES [-1, 1]   UTF-8 text (a CLIP text tower: tokenized here)
Outputs: EMBEDDING FP32 [-1, dim]    L2-normalised; zeros where ERROR is set
         ERROR     BYTES [-1, 1]     '' or why that item was rejected

Several requests arrive together under dynamic batching; their items run as one network
batch, and a bad item fails alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils
from embedding_runtime import RUNTIME_STATE_FILE, OnnxEmbedder


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        model_dir = Path(args["model_repository"]) / args["model_version"]
        self.embedder = OnnxEmbedder(
            model_dir,
            int(parameters.get("intra_op_threads", "1")),
            provider=parameters.get("provider", "auto"),
        )
        self.input_name = config["input"][0]["name"]
        # which provider runs, for `cbir model list` (Triton's API does not say it); a
        # read-only repository (the compose file mounts it so) keeps it to Triton's log
        print(f"{args['model_name']}: ONNX Runtime on {self.embedder.provider}", flush=True)
        state = model_dir / RUNTIME_STATE_FILE
        staged = state.with_name(f".{state.name}.{os.getpid()}")
        try:
            staged.write_text(json.dumps({"provider": self.embedder.provider, "pid": os.getpid()}))
            staged.replace(state)
        except OSError:
            pass

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [
            pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests
        ]
        counts = [len(batch) for batch in batches]
        if self.input_name == "TENSOR":
            vectors = self.embedder.embed_tensors(np.concatenate(batches).astype(np.float32))
            errors = [""] * len(vectors)
        elif self.input_name == "TEXT":
            texts = [
                bytes(item).decode("utf-8", errors="replace")
                for batch in batches
                for item in batch.reshape(-1)
            ]
            vectors, errors = self.embedder.embed_texts(texts)
        else:
            items = [bytes(item) for batch in batches for item in batch.reshape(-1)]
            vectors, errors = self.embedder.embed(items)
        responses, start = [], 0
        for count in counts:
            end = start + count
            error_column = np.array([[e.encode()] for e in errors[start:end]], dtype=np.object_)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("EMBEDDING", vectors[start:end]),
                        pb_utils.Tensor("ERROR", error_column.reshape(count, 1)),
                    ]
                )
            )
            start = end
        return responses
