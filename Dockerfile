# The project's own services (processors, query API, init) and a Triton image with what the
# Python-backend models import. Build: docker compose build
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.12-py3

FROM ${PYTHON_IMAGE} AS app
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
# every package pyproject.toml lists (tests/unit/test_compose_file.py keeps the two in step)
COPY cbir cbir
COPY producers producers
COPY processors processors
COPY query_api query_api
COPY schemas schemas
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --system --uid 1000 cbir
USER cbir
ENTRYPOINT ["cbir"]
CMD ["--help"]

FROM ${TRITON_IMAGE} AS triton
COPY cbir/stack/resources/servers-requirements.txt /tmp/servers-requirements.txt
# only what the models import; the Triton image brings its own server and backends
RUN grep -E '^(numpy|onnxruntime|opencv-python-headless|pillow|pillow_heif|regex|ftfy|wcwidth)==' /tmp/servers-requirements.txt > /tmp/models.txt \
    && pip install --no-cache-dir --break-system-packages -r /tmp/models.txt
