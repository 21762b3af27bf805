#!/usr/bin/env bash
# The demo: set up what is missing, start the local stack, serve the shared MobileNet from
# Triton, stream flowers17 through the pipeline, search with a photo from the command line and
# through the query API, rebuild the index from the log, and print the address of the web page.
set -euo pipefail
cd "$(dirname "$0")/.."
shared=${CBIR_SHARED_DIR:-../shared}
cbir=.venv/bin/cbir
scripts/bootstrap.sh
# uploads and deletes through the API need a key: made once, kept in .env (read by `cbir`)
if [ -z "${CBIR_API__API_KEY:-}" ] && ! grep -qs '^CBIR_API__API_KEY=' .env; then
  echo "CBIR_API__API_KEY=$(.venv/bin/python -c 'import secrets; print(secrets.token_hex(16))')" >> .env
fi
$cbir stack up
# the shared model is your-own-ONNX: RGB, squashed to 224x224, (pixel - 128) / 128
$cbir model export mobilenet --onnx "$shared/models/mobilenet_v1_embed.onnx" \
  --resize squash --scale 0.0078125 --offset -1
$cbir check
$cbir ingest "$shared/data/flowers17"           # 1360 photos; a re-run skips what is in
$cbir process status --wait 600                 # lag, dead letters, what the stores hold
echo; echo "search with a photo of species 5 (its own copy ranks first, then its kin):"
$cbir search "$shared/data/flowers17/5/image_0401.jpg" -k 8
api=$(.venv/bin/python -c 'from cbir.settings import get_settings as g; a = g().api; print(f"http://{a.host}:{a.port}")')
echo; echo "the same search through the query API (a second time: from the Redis cache):"
.venv/bin/python - "$api" "$shared/data/flowers17/5/image_0401.jpg" <<'PY'
import sys, time, httpx
api, photo = sys.argv[1], open(sys.argv[2], "rb").read()
for attempt in ("first", "second"):
    started = time.perf_counter()
    r = httpx.post(f"{api}/search", files={"image": ("q.jpg", photo)}, data={"k": 8}, timeout=60)
    r.raise_for_status()
    names = [x["file_name"] for x in r.json()["results"]]
    print(f"  {attempt}: {(time.perf_counter() - started) * 1000:.1f} ms, result cache "
          f"{r.headers['x-cache']}: {', '.join(names[:4])}, ...")
PY
echo; echo "rebuild the vector index from the embeddings topic (no re-embedding) while it serves:"
$cbir reindex --grace 0                         # replay, switch the alias, drop the old one
$cbir generations
cat <<MSG

The pipeline is up. Try:
  $cbir ingest PHOTOS_FOLDER           # your own images (folder names become tags)
  $cbir search PHOTO                   # the most similar stored images
  $cbir reindex --index-type IVF_FLAT  # a new index from the log, switched when complete
  $cbir stack status                   # health, ports, pids, memory of every service
  $cbir stack down                     # stop; the data stays for the next \`up\`
  API docs: $api/docs                  (uploads and deletes: X-API-Key from .env)

Search and browse in a browser: $api/
MSG
