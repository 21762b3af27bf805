#!/usr/bin/env bash
# The demo: set up what is missing, start the local stack, serve the shared MobileNet from
# Triton, check every service, and embed two photos and a file that is not an image.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${CBIR_SHARED_DIR:-../shared}
scripts/bootstrap.sh
.venv/bin/cbir stack up
# the shared model is your-own-ONNX: RGB, squashed to 224x224, (pixel - 128) / 128
.venv/bin/cbir model export mobilenet --onnx "$shared/models/mobilenet_v1_embed.onnx" \
  --resize squash --scale 0.0078125 --offset -1
.venv/bin/cbir check
.venv/bin/cbir model embed mobilenet "$shared/data/flowers17/0/image_0001.jpg" \
  "$shared/data/flowers17/5/image_0401.jpg" README.md || true  # README.md is rejected, on purpose
cat <<MSG

The stack is up and serves the model. Try:
  .venv/bin/cbir stack status          # health, ports, pids, memory
  .venv/bin/cbir model list            # the models in triton_repo/ and their identities
  .venv/bin/cbir stack logs triton     # any service's log
  .venv/bin/cbir stack down            # stop it; the data stays for the next \`up\`
MSG
