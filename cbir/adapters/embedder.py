"""Triton serving the embedding models exported by `cbir model export`."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from cbir.domain.errors import ModelMismatch, ModelNotServed, ServiceUnavailable
from cbir.domain.models import ModelIdentity
from cbir.settings import TritonSettings

WireProtocol = Literal["grpc", "http"]
# what Triton's client says when the server, not the request, is the problem
AWAY = ("failed to connect", "unavailable", "deadline exceeded", "connection refused")


class TritonEmbedder:
    """Encoded images in, L2-normalised embeddings out, through Triton over gRPC or HTTP."""

    def __init__(
        self,
        settings: TritonSettings,
        model: str,
        protocol: WireProtocol = "grpc",
        timeout_s: float = 120.0,
    ) -> None:
        self.model = model
        self.protocol = protocol
        self.timeout_s = timeout_s
        self.url = settings.grpc_url if protocol == "grpc" else settings.http_url
        if protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
        self._module: Any = client_module
        if protocol == "grpc":
            self._client: Any = client_module.InferenceServerClient(self.url)
            self._infer_options: dict[str, Any] = {"client_timeout": timeout_s}
        else:
            self._client = client_module.InferenceServerClient(
                self.url, connection_timeout=timeout_s, network_timeout=timeout_s
            )
            self._infer_options = {}
        self._identity: ModelIdentity | None = None

    def _call(self, action: str, *args: Any, **kwargs: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return getattr(self._client, action)(*args, **kwargs)
        except InferenceServerException as exc:
            text = str(exc)
            if "unknown model" in text or "not found" in text or "not ready" in text:
                raise ModelNotServed(
                    f"Triton at {self.url} does not serve {self.model!r} ({text.strip()}): "
                    f"export it with `cbir model export {self.model} ...` and load it with "
                    f"`cbir model load {self.model}`"
                ) from exc
            if any(sign in text.lower() for sign in AWAY):
                raise ServiceUnavailable(
                    "Triton", self.url, "CBIR_TRITON__GRPC_URL / HTTP_URL", exc
                ) from exc
            raise

    def identity(self) -> ModelIdentity:
        """What the served model's vectors mean, from its config's parameters."""
        if self._identity is None:
            if self.protocol == "grpc":
                config = self._call("get_model_config", self.model, as_json=True)["config"]
            else:
                config = self._call("get_model_config", self.model)
            params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
            if "model_id" not in params:
                raise ModelNotServed(
                    f"{self.model!r} is not an embedding model exported by "
                    "`cbir model export` (its config has no model_id)"
                )
            self._identity = ModelIdentity(
                name=self.model,
                model_id=params["model_id"],
                dim=int(params["dim"]),
                pooling=params["pooling"],
                fingerprint=params["fingerprint"],
                max_batch_size=int(config.get("max_batch_size", 32)),
                pairs_with=params.get("pairs_with", ""),
            )
        return self._identity

    def expect(self, model_id: str) -> ModelIdentity:
        """The served identity, which must be `model_id` (a query or an embedding compared
        with vectors of another version would be meaningless)."""
        identity = self.identity()
        if identity.model_id != model_id:
            raise ModelMismatch(
                f"the index holds vectors of {model_id} but Triton serves {identity.model_id}: "
                "load the model version the index was built with, or re-embed (`cbir re-embed`)"
            )
        return identity

    def embed(self, images: Sequence[bytes]) -> tuple[np.ndarray, list[str]]:
        """Embeddings (N, dim) and per image '' or why it was rejected (its row is zeros)."""
        return self._embed_items("IMAGE", [bytes(b) for b in images])

    def embed_texts(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """A text tower's embeddings (N, dim) and per text '' or why it was rejected."""
        return self._embed_items("TEXT", [text.encode("utf-8") for text in texts])

    def _embed_items(self, kind: str, items: list[bytes]) -> tuple[np.ndarray, list[str]]:
        identity = self.identity()
        vectors = np.zeros((len(items), identity.dim), dtype=np.float32)
        errors: list[str] = []
        step = identity.max_batch_size
        for start in range(0, len(items), step):
            chunk = np.array([[item] for item in items[start : start + step]], dtype=np.object_)
            model_input = self._module.InferInput(kind, list(chunk.shape), "BYTES")
            model_input.set_data_from_numpy(chunk)
            outputs = [self._module.InferRequestedOutput(n) for n in ("EMBEDDING", "ERROR")]
            result = self._call(
                "infer", self.model, [model_input], outputs=outputs, **self._infer_options
            )
            vectors[start : start + len(chunk)] = result.as_numpy("EMBEDDING")
            errors.extend(
                e.decode() if isinstance(e, bytes) else str(e)
                for e in result.as_numpy("ERROR").reshape(-1)
            )
        return vectors, errors

    def embed_tensors(self, inputs: np.ndarray) -> np.ndarray:
        """Embeddings of preprocessed inputs (N, 3, S, S), for a model exported with
        --tensor-input (ten times larger requests than encoded images; for comparison)."""
        model_input = self._module.InferInput("TENSOR", list(inputs.shape), "FP32")
        model_input.set_data_from_numpy(inputs.astype(np.float32))
        output = self._module.InferRequestedOutput("EMBEDDING")
        result = self._call(
            "infer", self.model, [model_input], outputs=[output], **self._infer_options
        )
        return np.asarray(result.as_numpy("EMBEDDING"))

    def load(self) -> None:
        """Ask Triton to (re)load the model from its repository."""
        self._call("load_model", self.model)
        self._identity = None

    def close(self) -> None:
        self._client.close()


class TritonEmbedders:
    """The `Embedders` port: one Triton client per model, made on first use and kept."""

    def __init__(
        self, settings: TritonSettings, protocol: WireProtocol = "grpc", timeout_s: float = 120.0
    ) -> None:
        self.settings = settings
        self.protocol = protocol
        self.timeout_s = timeout_s
        self._made: dict[str, TritonEmbedder] = {}
        self._lock = threading.Lock()

    def __call__(self, model: str) -> TritonEmbedder:
        with self._lock:
            if model not in self._made:
                self._made[model] = TritonEmbedder(
                    self.settings, model, self.protocol, self.timeout_s
                )
            return self._made[model]

    def close(self) -> None:
        for embedder in self._made.values():
            embedder.close()
        self._made.clear()
