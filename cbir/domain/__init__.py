"""The pure core: image ids and media types, model ids, generations and their lifecycle, the
index plan, the switch check, typed rows and hits, and the project's one error tree. No
service client and no I/O is imported here (checked by import-linter in CI)."""
