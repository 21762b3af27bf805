"""The processors' roles: each derived output in a consumer group of its own."""

from __future__ import annotations

import pytest

from cbir.settings import Settings
from cbir.wiring import consumer_role, consumer_roles


def test_derived_outputs_run_in_groups_of_their_own_with_their_own_worker_counts() -> None:
    settings = Settings.model_validate(
        {
            "processors": {
                "app_id": "p",
                "workers": 3,
                "feature_workers": 2,
                "duplicate_workers": 1,
                "thumbnail_workers": 2,
            }
        }
    )
    roles = [(r.name, r.group, r.workers) for r in consumer_roles(settings)]
    assert roles == [
        ("core", "p", 3),
        ("features", "p.features", 2),
        ("duplicates", "p.duplicates", 1),
        ("thumbnails", "p.thumbnails", 2),
    ]


def test_without_local_features_and_thumbnails_only_the_indexing_group_runs() -> None:
    settings = Settings.model_validate(
        {"local_features": {"enabled": False}, "thumbnails": {"enabled": False}}
    )
    assert [r.name for r in consumer_roles(settings)] == ["core"]
    with pytest.raises(ValueError, match="no processors role 'features': the roles are core"):
        consumer_role(settings, "features")
    only_thumbnails = Settings.model_validate({"local_features": {"enabled": False}})
    assert [r.name for r in consumer_roles(only_thumbnails)] == ["core", "thumbnails"]
