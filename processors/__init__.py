"""The processors: the Faust app (`app.py`), its stages (`stages/`) and their supervisor."""

# the environment variable by which the supervisor numbers its workers (each has a data folder)
WORKER_INDEX = "CBIR_PROCESSORS_WORKER_INDEX"
# and by which it tells each worker its role (`cbir.wiring.consumer_roles`)
WORKER_ROLE = "CBIR_PROCESSORS_ROLE"
