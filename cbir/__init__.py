"""cbir-stream: reverse image search on an event stream.

The shared code of the card's stages (producers/, processors/, query_api/, schemas/), one
sub-package a layer, from the ground up:

- `settings`, `logs`, `output`: configuration, the log format and console output (every
  layer may import them);
- `domain`: pure types and rules; `ports`: one small protocol per service role;
- `adapters`: one adapter per server (the only code that imports a server's client);
  `models`: the embedding runtime and its export to Triton; `local_features`: SIFT, geometry,
  VLAD;
- `evaluation`, `training`, `replay`: application code that receives its adapters;
- `wiring`: the composition root (settings in, adapters and small configs out);
- `stack`: the launcher of the local servers; `bench`: the benchmarks; `cli`: `cbir ...`.

docs/ARCHITECTURE.md says which room each change goes in.
"""
