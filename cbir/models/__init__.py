"""Embedding models: the runtime that turns encoded images into descriptors (run inside Triton
and in-process), the Triton Python-backend model, and the export into triton_repo/."""
