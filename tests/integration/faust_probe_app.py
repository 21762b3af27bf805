"""A minimal Faust app for the stack test: one agent that appends what it reads to a file.

Run as `faust -A tests.integration.faust_probe_app worker`; configured by PROBE_* variables.
"""

import os
from pathlib import Path

import faust

app = faust.App(
    f"cbir-probe-{os.environ['PROBE_ID']}",
    broker=f"kafka://{os.environ['PROBE_BROKER']}",
    store="memory://",
    web_enabled=False,
    datadir=os.environ["PROBE_DATADIR"],
    topic_replication_factor=1,
    topic_partitions=1,
)
topic = app.topic(os.environ["PROBE_TOPIC"], value_type=bytes, value_serializer="raw")
received = Path(os.environ["PROBE_OUT"])


@app.agent(topic)
async def record(stream: faust.StreamT[bytes]) -> None:
    async for value in stream:
        with received.open("a") as out:
            out.write(value.decode() + "\n")
