"""The local stack: installs and runs Kafka, MinIO, Milvus, MariaDB, Redis and Triton as plain
processes on 127.0.0.1, for machines without a Docker engine (`cbir stack ...`)."""
