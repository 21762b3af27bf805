"""`stack down` stops every process it started, and a later `stack up` finds the data again."""

from __future__ import annotations

import io
import time
import uuid

import numpy as np
import psutil
import pytest
from confluent_kafka import Consumer, Producer
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, utility

from cbir.adapters import metadata_store, object_store, vector_index
from cbir.stack.launcher import Launcher
from tests.integration.test_stack_services import create_topic, unhealthy

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_down_then_up_keeps_messages_objects_rows_and_vectors(launcher: Launcher) -> None:
    settings = launcher.settings
    token = uuid.uuid4().hex[:10]
    topic, key, collection_name = f"test.persist.{token}", f"persist/{token}", f"persist_{token}"
    vector = np.random.default_rng(3).normal(size=8).astype(np.float32)

    create_topic(settings, topic)
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    producer.produce(topic, key=token.encode(), value=b"kept")
    assert producer.flush(30) == 0
    object_store.client(settings.minio).put_object(
        settings.minio.bucket, key, io.BytesIO(b"kept"), 4
    )
    with metadata_store.connect(settings.mysql) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS test_persist (token VARCHAR(20) PRIMARY KEY)")
        cur.execute("INSERT INTO test_persist VALUES (%s)", (token,))
    with vector_index.connection(settings.milvus) as alias:
        schema = CollectionSchema(
            [
                FieldSchema("image_id", DataType.VARCHAR, is_primary=True, max_length=64),
                FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=8),
            ]
        )
        Collection(collection_name, schema, using=alias).insert([[token], [vector.tolist()]])

    pids = [s.pid for s in launcher.status() if s.pid]
    assert len(pids) == len(launcher.services)
    launcher.down()
    assert not any(_alive(pid) for pid in pids), "a service outlived `stack down`"
    assert all(s.health == "stopped" for s in launcher.status())

    states = launcher.up()
    assert unhealthy(states) == {}

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"persist-{token}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    message = None
    deadline = time.monotonic() + 30
    while message is None and time.monotonic() < deadline:
        polled = consumer.poll(1.0)
        message = polled if polled is not None and polled.error() is None else None
    consumer.close()
    assert message is not None and message.value() == b"kept"

    stored = object_store.client(settings.minio).get_object(settings.minio.bucket, key)
    assert stored.read() == b"kept"
    stored.close()

    with metadata_store.connect(settings.mysql) as conn, conn.cursor() as cur:
        cur.execute("SELECT token FROM test_persist WHERE token = %s", (token,))
        assert cur.fetchone() == (token,)
        cur.execute("DROP TABLE test_persist")

    with vector_index.connection(settings.milvus) as alias:
        collection = Collection(collection_name, using=alias)
        collection.create_index("embedding", {"index_type": "FLAT", "metric_type": "L2"})
        collection.load()
        rows = collection.query(
            f'image_id == "{token}"', output_fields=["embedding"], consistency_level="Strong"
        )
        utility.drop_collection(collection_name, using=alias)
    assert len(rows) == 1
    np.testing.assert_allclose(rows[0]["embedding"], vector, rtol=1e-6)
