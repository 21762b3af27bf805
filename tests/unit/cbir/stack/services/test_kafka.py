"""The KRaft cluster id given to the storage tool (no server: pure)."""

from __future__ import annotations

import base64

from cbir.stack.services.kafka import new_cluster_id


def test_an_id_that_would_read_as_an_option_is_drawn_again() -> None:
    draws = iter([b"\xf8" + bytes(15), bytes(range(16))])  # the first encodes as "-A..."
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).startswith(b"-")
    cluster_id = new_cluster_id(lambda: next(draws))
    assert cluster_id == base64.urlsafe_b64encode(bytes(range(16))).rstrip(b"=").decode()
    assert len(cluster_id) == 22


def test_ids_are_22_url_safe_characters_and_differ() -> None:
    ids = {new_cluster_id() for _ in range(500)}
    assert len(ids) == 500
    assert all(len(i) == 22 and "-" not in i for i in ids)
