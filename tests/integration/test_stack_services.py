"""Each service of the local stack does its real job: round trips through the real clients."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np
import pytest
import redis
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from pymilvus import Collection, CollectionSchema, DataType, FieldSchema, utility

from cbir.adapters import kafka_topics, metadata_store, object_store, vector_index
from cbir.settings import Settings
from cbir.stack.launcher import Launcher, ServiceState

pytestmark = pytest.mark.integration


def test_every_service_is_healthy_and_up_again_changes_nothing(launcher: Launcher) -> None:
    before = {s.name: s.pid for s in launcher.status()}
    assert unhealthy(launcher.status()) == {}
    after = {s.name: s.pid for s in launcher.up()}
    assert after == before


def unhealthy(states: list[ServiceState]) -> dict[str, str]:
    """Each service that is not healthy, with its health and why: a short assertion message."""
    return {s.name: f"{s.health}: {s.detail}" for s in states if s.health != "healthy"}


def create_topic(settings: Settings, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": settings.kafka.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)


def test_kafka_pipeline_topics_are_compacted(stack: Settings) -> None:
    admin = AdminClient({"bootstrap.servers": stack.kafka.bootstrap_servers})
    from confluent_kafka.admin import ConfigResource

    for spec in kafka_topics.pipeline_topics(stack.kafka):
        resource = ConfigResource(ConfigResource.Type.TOPIC, spec.name)
        config = admin.describe_configs([resource])[resource].result(30)
        assert config["cleanup.policy"].value == spec.config["cleanup.policy"]
        assert len(admin.list_topics(spec.name, timeout=10).topics[spec.name].partitions) == (
            stack.kafka.partitions
        )


def test_kafka_produce_and_consume(stack: Settings) -> None:
    topic = f"test.roundtrip.{uuid.uuid4().hex[:8]}"
    create_topic(stack, topic)
    producer = Producer({"bootstrap.servers": stack.kafka.bootstrap_servers})
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(5)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": stack.kafka.bootstrap_servers,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    received: dict[bytes, bytes] = {}
    deadline = time.monotonic() + 30
    while len(received) < len(sent) and time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            received[message.key() or b""] = message.value() or b""
    consumer.close()
    assert received == sent


def test_minio_put_get_list_and_presigned_url(stack: Settings) -> None:
    client = object_store.client(stack.minio)
    assert client.bucket_exists(stack.minio.bucket)
    key = f"test/{uuid.uuid4().hex}.bin"
    payload = uuid.uuid4().bytes * 100
    import io

    client.put_object(stack.minio.bucket, key, io.BytesIO(payload), len(payload))
    response = client.get_object(stack.minio.bucket, key)
    try:
        assert response.read() == payload
    finally:
        response.close()
        response.release_conn()
    listed = [o.object_name for o in client.list_objects(stack.minio.bucket, prefix="test/")]
    assert key in listed
    url = client.presigned_get_object(stack.minio.bucket, key)
    fetched = httpx.get(url, timeout=10)
    assert fetched.status_code == 200
    assert fetched.content == payload


def test_milvus_collection_insert_index_search_delete(stack: Settings) -> None:
    name = f"test_{uuid.uuid4().hex[:8]}"
    with vector_index.connection(stack.milvus) as alias:
        schema = CollectionSchema(
            [
                FieldSchema("image_id", DataType.VARCHAR, is_primary=True, max_length=64),
                FieldSchema("embedding", DataType.FLOAT_VECTOR, dim=8),
            ]
        )
        collection = Collection(name, schema, using=alias)
        try:
            rng = np.random.default_rng(7)
            vectors = rng.normal(size=(50, 8)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ids = [f"img-{i}" for i in range(50)]
            collection.insert([ids, vectors.tolist()])
            collection.create_index(
                "embedding",
                {
                    "index_type": "HNSW",
                    "metric_type": "IP",
                    "params": {"M": 8, "efConstruction": 64},
                },
            )
            collection.load()

            def nearest(queries: np.ndarray) -> list[str]:
                hits = collection.search(
                    queries.tolist(),
                    "embedding",
                    {"metric_type": "IP", "params": {"ef": 32}},
                    limit=1,
                    consistency_level="Strong",
                )
                return [h[0].id for h in hits]

            assert nearest(vectors[:3]) == ids[:3]
            collection.delete('image_id in ["img-0"]')
            assert nearest(vectors[:1]) != ["img-0"]
            remaining = collection.query(
                'image_id != ""', output_fields=["count(*)"], consistency_level="Strong"
            )
            assert remaining[0]["count(*)"] == 49
        finally:
            utility.drop_collection(name, using=alias)


def test_mysql_create_insert_select(stack: Settings) -> None:
    with metadata_store.connect(stack.mysql) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)
        cur.execute("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in cur.fetchall()] == [v for v, _ in metadata_store.MIGRATIONS]
        cur.execute("CREATE TABLE IF NOT EXISTS test_probe (id INT PRIMARY KEY, name VARCHAR(20))")
        cur.execute("REPLACE INTO test_probe VALUES (%s, %s), (%s, %s)", (1, "one", 2, "two"))
        cur.execute("SELECT id, name FROM test_probe ORDER BY id")
        assert cur.fetchall() == ((1, "one"), (2, "two"))
        cur.execute("DROP TABLE test_probe")


def test_redis_set_get_and_expiry(stack: Settings) -> None:
    client = redis.Redis.from_url(stack.redis.url)
    key = f"test:{uuid.uuid4().hex}"
    client.set(key, b"value", px=300)
    assert client.get(key) == b"value"
    assert 0 < client.pttl(key) <= 300
    time.sleep(0.5)
    assert client.get(key) is None


def test_triton_infers_over_http_and_grpc(stack: Settings) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    values = np.array([[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 0.5, 9.0]], dtype=np.float32)
    http = httpclient.InferenceServerClient(stack.triton.http_url)
    assert http.is_model_ready("add_one")
    http_input = httpclient.InferInput("INPUT", list(values.shape), "FP32")
    http_input.set_data_from_numpy(values)
    http_out = http.infer("add_one", [http_input]).as_numpy("OUTPUT")

    grpc = grpcclient.InferenceServerClient(stack.triton.grpc_url)
    grpc_input = grpcclient.InferInput("INPUT", list(values.shape), "FP32")
    grpc_input.set_data_from_numpy(values)
    grpc_out = grpc.infer("add_one", [grpc_input]).as_numpy("OUTPUT")

    np.testing.assert_array_equal(http_out, values + 1)
    np.testing.assert_array_equal(grpc_out, values + 1)
