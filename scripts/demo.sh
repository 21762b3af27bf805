#!/usr/bin/env bash
# The demo: set up what is missing, start the local stack, serve the shared MobileNet from
# Triton, stream flowers17 through the pipeline, and search with a photo.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${CBIR_SHARED_DIR:-../shared}
cbir=.venv/bin/cbir
scripts/bootstrap.sh
$cbir stack up
# the shared model is your-own-ONNX: RGB, squashed to 224x224, (pixel - 128) / 128
$cbir model export mobilenet --onnx "$shared/models/mobilenet_v1_embed.onnx" \
  --resize squash --scale 0.0078125 --offset -1
$cbir check
$cbir ingest "$shared/data/flowers17"           # 1360 photos; a re-run skips what is in
$cbir process status --wait 600                 # lag, dead letters, what the stores hold
echo; echo "search with a photo of species 5 (its own copy ranks first, then its kin):"
$cbir search "$shared/data/flowers17/5/image_0401.jpg" -k 8
cat <<MSG

The pipeline is up. Try:
  $cbir ingest PHOTOS_FOLDER           # your own images (folder names become tags)
  $cbir search PHOTO                   # the most similar stored images
  $cbir stack status                   # health, ports, pids, memory of every service
  $cbir stack down                     # stop; the data stays for the next \`up\`
MSG
