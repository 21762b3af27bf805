"""The switch gate protects the whole collection, on the real stack, through the CLI a user
runs: a head trained on flowers17 improves the flowers on held-out probes, but the collection
also holds photographs of places (INRIA Holidays), which it ranks worse; the label-free
collection check (results judged same scene or not by stored local features) refuses the
switch and says why. With the places deleted, the same re-embed passes and goes live.

The module runs a pipeline of its own beside the session's (the `gate` namespace: topics,
buckets, database, alias, processors with local features on), so that only its images are
judged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cbir import wiring
from cbir.adapters import generations, metadata_store
from cbir.domain.gate import Verdict
from cbir.domain.images import image_id_of
from cbir.models.export import trained_on
from cbir.settings import Settings, settings_environment
from cbir.stack.launcher import Launcher
from producers.ingest import collect
from tests.integration.helpers import indexed, namespace_apps, namespaced, wait_for

pytestmark = pytest.mark.integration
NAMESPACE = "gate"
CBIR = str(Path(sys.executable).parent / "cbir")
PER_SPECIES = 30  # flowers17: 17 species x 30 photographs
PLACES = 300  # the first 300 Holidays photographs (their scenes whole)
HEAD = "gateflowers"


@pytest.fixture(scope="module")
def gate_stack(
    launcher: Launcher, mobilenet_served: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Launcher]:
    settings = namespaced(
        launcher.settings,
        NAMESPACE,
        tmp_path_factory.mktemp(NAMESPACE),
        local_features={"enabled": True, "bucket": f"{NAMESPACE}-features"},
    )
    with namespace_apps(launcher, settings, ["processors"]) as apps:
        yield apps


def cli(settings: Settings, *arguments: str, timeout: float = 600) -> tuple[int, str]:
    env = {**os.environ, **settings_environment(settings)}
    run = subprocess.run(
        [CBIR, *arguments], env=env, capture_output=True, text=True, timeout=timeout
    )
    return run.returncode, " ".join((run.stdout + run.stderr).split())


def features_extracted(settings: Settings) -> bool:
    role = wiring.consumer_role(settings, wiring.FEATURES)
    return not any(
        lag.lag for lag in wiring.consumer_lag(settings, [settings.kafka.images_topic], role.group)
    )


def generation_named(settings: Settings, name: str) -> generations.Generation:
    with metadata_store.connect(settings.mysql) as conn:
        found = [g for g in generations.all_generations(conn) if g.name == name]
    assert len(found) == 1, name
    return found[0]


def live_name(settings: Settings) -> str:
    with metadata_store.connect(settings.mysql) as conn:
        (live,) = [g for g in generations.all_generations(conn) if g.state == "live"]
    return live.name


def test_a_head_that_helps_the_flowers_and_hurts_the_places_is_refused_then_passes_alone(
    gate_stack: Launcher, shared_dir: Path, tmp_path: Path
) -> None:
    settings = gate_stack.settings
    flowers = tmp_path / "flowers17"
    for species in sorted((shared_dir / "data" / "flowers17").iterdir()):
        (flowers / species.name).mkdir(parents=True)
        for photo in sorted(species.iterdir())[:PER_SPECIES]:
            shutil.copy(photo, flowers / species.name / photo.name)
    places = collect([str(shared_dir / "data" / "holidays")])
    places = sorted(places, key=lambda item: str(item.path))[:PLACES]
    items = collect([str(flowers)]) + places
    every = {image_id_of(item.path.read_bytes()) for item in items}
    place_ids = sorted({image_id_of(item.path.read_bytes()) for item in places})
    wiring.ingest(settings, items)
    wait_for(lambda: indexed(settings, every) == len(every), 900, "the collection indexed")
    wait_for(lambda: features_extracted(settings), 600, "every image's local features")
    before = live_name(settings)

    # a head trained on the flowers; it says what it learned and how the switch is judged
    code, said = cli(
        settings, "train", str(flowers), "--name", HEAD, "--checkpoint", str(tmp_path / "h.pt")
    )
    assert code == 0, said
    assert "collection check" in said and "trained on" in said, said
    learned = trained_on(settings.triton.model_repository, HEAD)
    assert learned is not None and len(learned.classes) == 17
    # the probes: the flowers the head never saw (the ones validation held out)
    probes = tmp_path / "probes"
    for photo in flowers.rglob("*.jpg"):
        if image_id_of(photo.read_bytes()) not in learned.images:
            (probes / photo.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy(photo, probes / photo.parent.name / photo.name)

    code, said = cli(settings, "re-embed", HEAD, "--probe", str(probes), "--grace", "0")
    assert code != 0 and "was not switched live: the collection check refused" in said, said
    assert "outside the trained classes" in said and "--no-gate" in said, said
    assert live_name(settings) == before
    code, table = cli(settings, "generations")
    assert code == 0 and "refused" in table, table
    with metadata_store.connect(settings.mysql) as conn:
        (refused,) = [g for g in generations.all_generations(conn) if g.state == "building"]
    assert refused.evaluation is not None
    verdict = Verdict.from_json(refused.evaluation)
    print(f"refused: {verdict.detail}")  # the figures, for the record (pytest -s)
    probe, collection = verdict.of("probe"), verdict.of("collection")
    assert probe is not None and collection is not None
    # the flowers improve: the probe check alone would have let it through
    assert probe.passed and probe.live_value is not None and probe.value is not None
    assert probe.value > probe.live_value, probe
    # the places get worse, beyond the tolerance, judged on enough of them
    assert not collection.passed and collection.probes >= 100, collection
    assert collection.value is not None and collection.live_value is not None
    assert collection.value < collection.live_value - collection.tolerance, collection

    # without the places, nothing outside the flowers is left to harm: it passes, goes live
    wiring.delete(settings, place_ids)
    wait_for(lambda: indexed(settings, set(place_ids)) == 0, 300, "the places deleted")
    code, said = cli(settings, "re-embed", HEAD, "--probe", str(probes), "--grace", "0")
    assert code == 0, said
    assert "collection check skipped: no indexed image outside" in said, said
    print(f"passed: {said[said.index('gate:') :]}")
    live = generation_named(settings, live_name(settings))
    assert live.name == refused.name and live.model_id.startswith(f"{HEAD}:")
    assert live.evaluation is not None and Verdict.from_json(live.evaluation).passed
