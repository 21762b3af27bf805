"""`cbir eval` end to end on the real stack: a 3-class, 30-image subset of flowers17 through
Triton (the shared MobileNet) and real Milvus indexes, to JSON, Markdown and a PNG plot."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from cbir.cli.main import main
from cbir.settings import get_settings, settings_environment
from cbir.stack.launcher import Launcher

pytestmark = pytest.mark.integration


@pytest.fixture()
def stack_environment(
    launcher: Launcher, mobilenet_served: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """`cbir` commands in this process talk to the test stack."""
    for name, value in settings_environment(launcher.settings).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_eval_writes_json_markdown_and_a_plot_with_plausible_values(
    stack_environment: None, shared_dir: Path, tmp_path: Path
) -> None:
    code = main(
        [
            "eval",
            str(shared_dir / "data" / "flowers17"),
            "--classes", "0", "5", "12",
            "--per-class", "10",
            "--index", "FLAT", "HNSW:M=8,efConstruction=64,ef=16",
            "--rerank", "none", "exact", "qe",
            "--out", str(tmp_path),
            "--name", "small",
        ]
    )  # fmt: skip
    assert code == 0
    document = json.loads((tmp_path / "small.json").read_text())
    assert document["dataset"]["images"] == 30 and document["machine"]["cores"]
    records = {(r["index_type"], r["rerank"]): r for r in document["records"]}
    assert set(records) == {
        (index, rerank)
        for index in ("exhaustive", "FLAT", "HNSW")
        for rerank in ("none", "exact", "qe")
    }
    for record in records.values():
        assert 0.0 < record["mAP"] <= 1.0
        assert 0.0 <= record["NDCG@10"] <= 1.0 and record["R@100"] == 1.0  # depth 29 < 100
        assert len(record["pr_curve"]["precision"]) == 11
    exhaustive, flat = records[("exhaustive", "none")], records[("FLAT", "none")]
    assert flat["mAP"] == pytest.approx(exhaustive["mAP"], abs=1e-4)
    assert flat["P@5"] == pytest.approx(exhaustive["P@5"], abs=1e-4)
    # FLAT already scores exactly: re-scoring changes nothing
    assert records[("FLAT", "exact")]["mAP"] == pytest.approx(flat["mAP"], abs=1e-4)
    assert document["exhaustive_full_ranking_map"]["mobilenet"] == pytest.approx(
        exhaustive["mAP"], abs=1e-4
    )
    table = (tmp_path / "small.md").read_text()
    assert "| flowers17 | mobilenet | FLAT | none |" in table
    assert (tmp_path / "small_pr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
