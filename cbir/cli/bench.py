"""`cbir bench ...`: benchmarks that print their figures and write bench/results/*.json."""

from __future__ import annotations

from typing import Any


def register(areas: Any) -> None:
    from cbir.bench import (
        ann,
        duplicates,
        embedding,
        faults,
        holidays,
        holidays_api,
        ingest,
        local_features,
        models,
        query,
        replay,
        thumbnails,
        training,
    )

    bench = areas.add_parser("bench", help="benchmarks (figures to bench/results/)")
    actions = bench.add_subparsers(dest="action", required=True)
    embedding.register(actions)
    ingest.register(actions)
    query.register(actions)
    ann.register(actions)
    replay.register(actions)
    faults.register(actions)
    training.register(actions)
    local_features.register(actions)
    holidays.register(actions)
    duplicates.register(actions)
    holidays_api.register(actions)
    models.register(actions)
    thumbnails.register(actions)
