"""Reindex, re-embed and rebuild from nothing: fill a new generation from the log while the
live one keeps answering, then switch the alias to it.

How a new generation is filled without a gap:
1. It is registered as `building` (MySQL) and its collection created. From the processors'
   next batch on, every new event is written to it as well as to the live generation.
2. A replay, a consumer group of its own named after the generation, reads the source topic
   from the beginning (the embeddings topic for a reindex, the images topic through the new
   model for a re-embed) and writes into it. Everything logged before step 1 is covered by
   the replay, everything after by the processors (and the replay too, which keeps
   following the topic until the switch). The stores are idempotent, so overlap is harmless.
3. When the replay has nothing left, the processors are not behind, and the new generation
   holds as many vectors as the live one, the alias is switched (Milvus `alter_alias`,
   atomic) and the registry, the rows' generation and the index generation are updated in
   one MySQL transaction. Searches never see a half-built generation: nothing else moves the
   alias.
4. The old generation is kept for a grace period (searches that read the alias just before
   the switch finish on it), then dropped, with its embeddings topic when nothing else uses
   it.
A replay killed at any point leaves the generation `building`; the same command continues it
from its last committed batch (`--restart` abandons it and starts a new one).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from cbir.domain.errors import ReplayError
from cbir.domain.gate import COLLECTION, Evaluation, Verdict, gate, skipped
from cbir.domain.generations import Generation, GenerationState, embeddings_topic_of
from cbir.domain.models import ModelId
from cbir.domain.switch import SwitchCheck, switch_verdict
from cbir.ports import Embedders, EventLog, GenerationRegistry, MetadataStore, VectorIndex
from cbir.replay.backfill import Backfill, Destinations
from cbir.replay.gate import CollectionCheck, CollectionJudge, Probe, probe_quality
from processors.stages import Stage
from schemas.codec import MalformedEvent
from schemas.events import EmbeddingComputed, EventSerializer

log = logging.getLogger("cbir.replay")
CHECK_EVERY_S = 1.0


@dataclass(frozen=True)
class ReplayOptions:
    index_type: str | None = None  # None: the live generation's (or the configured) type
    index_params: dict[str, Any] | None = None  # None: the type's defaults
    grace_s: float = 600.0
    keep_old: bool = False
    restart: bool = False
    batch_size: int = 500
    max_rate: float = 0.0  # events per second, 0: as fast as it goes
    probe: Probe | None = None  # gate the switch on this labelled probe set
    collection: CollectionCheck | None = None  # and on the rest of the collection, label-free

    @property
    def gated(self) -> bool:
        return self.probe is not None or self.collection is not None


@dataclass(frozen=True)
class ReplayStatus:
    """What the progress display shows."""

    generation: str
    phase: str  # replaying, waiting, switched, grace, done
    replayed: int
    lag: int
    rate: float
    eta_s: float | None
    detail: str = ""


Report = Callable[[ReplayStatus], None]


class StageFactory(Protocol):
    """Makes the stage a replay runs its events through (`cbir.wiring.Adapters` does)."""

    def embed_stage(self, replay: Generation | None = None) -> Stage: ...
    def index_stage(self, replay: Generation | None = None) -> Stage: ...


@dataclass(frozen=True)
class ReplayConfig:
    """What the replay commands need of the settings (made by the wiring)."""

    app_id: str  # the processors' consumer group; a replay's group is named after it
    images_topic: str
    embeddings_topic: str  # the first model's; a re-embed's is named after its model
    alias: str  # the Milvus alias the API searches
    index_type: str  # of a first generation's collection
    destinations: Destinations

    def replay_group(self, generation: Generation) -> str:
        """The consumer group of the replay that fills a generation (a rerun continues it)."""
        return f"{self.app_id}.replay.{generation.name}"


class Rebuilder:
    """The replay commands, over the ports they need."""

    def __init__(
        self,
        config: ReplayConfig,
        report: Report,
        registry: GenerationRegistry,
        metadata: MetadataStore,
        index: VectorIndex,
        embedders: Embedders,
        events: EventLog,
        stages: StageFactory,
        judge: CollectionJudge | None = None,
    ) -> None:
        """`judge`: runs the collection check (None: a check asked for is skipped, saying so)."""
        self.config = config
        self.report = report
        self.registry = registry
        self.metadata = metadata
        self.index = index
        self.embedders = embedders
        self.events = events
        self.stages = stages
        self.judge = judge

    # -- the three commands --

    def reindex(self, options: ReplayOptions, topic: str | None = None) -> Generation:
        """A new generation from an embeddings topic (no re-embedding): other index
        parameters, or everything back after Milvus and MySQL were lost."""
        live = self.registry.live()
        if live is not None:
            source = live.embeddings_topic
            model_id, dim, triton_model = live.model_id, live.dim, live.model
        else:
            source = topic or self._embeddings_topic()
            model_id, dim = self._model_in(source)
            triton_model = ModelId.parse(model_id).triton_model
        generation = self._building(options, source, triton_model, model_id, dim, live)
        stage = self.stages.index_stage(replay=generation)
        return self._fill_and_switch(generation, source, stage, options, live)

    def re_embed(self, model: str, options: ReplayOptions) -> Generation:
        """A new generation of another model: the images topic replayed through it into an
        embeddings topic of its own, indexed into a collection of its own."""
        identity = self.embedders(model).identity()
        live = self.registry.live()
        if live is not None and live.model_id == identity.model_id:
            raise ReplayError(
                f"{identity.model_id} is the live model already: to change index parameters "
                "use `cbir reindex`"
            )
        topic = embeddings_topic_of(self.config.embeddings_topic, identity.model_id)
        self.events.ensure_embeddings_topic(topic)
        generation = self._building(options, topic, model, identity.model_id, identity.dim, live)
        stage = self.stages.embed_stage(replay=generation)
        return self._fill_and_switch(generation, self.config.images_topic, stage, options, live)

    def prune(self) -> list[str]:
        """Drop the retired generations whose grace period is over (with their replay's
        consumer group, and their embeddings topic when no other generation uses it)."""
        dropped = []
        for old in self.registry.expired():
            if self.index.aliased() == old.name:
                continue  # never drop what the alias points at
            self.index.drop(old.name)
            self.registry.set_state(old, GenerationState.DROPPED)
            dropped.append(old.name)
            self._forget_log_of(old)
            log.info("dropped", extra={"generation": old.name})
        return dropped

    # -- steps --

    def _embeddings_topic(self) -> str:
        """With no registry to say which, the one embeddings topic in Kafka: the configured
        one, or a re-embed's (`<configured>.<model>`), which replaces it."""
        base = self.config.embeddings_topic
        found = sorted(
            name for name in self.events.topics() if name == base or name.startswith(f"{base}.")
        )
        if len(found) != 1:
            raise ReplayError(
                f"no generation is registered and Kafka holds {len(found)} embeddings topics "
                f"({', '.join(found) or 'none'}): name the one to rebuild from with --topic"
            )
        return found[0]

    def _model_in(self, topic: str) -> tuple[str, int]:
        """The model id and dimension of the embeddings in a topic (its first one)."""
        serializer = EventSerializer()

        def embedding(value: bytes) -> tuple[str, int] | None:
            try:
                event = serializer.loads(value)
            except MalformedEvent:
                return None
            return (event.model_id, event.dim) if isinstance(event, EmbeddingComputed) else None

        try:
            found: tuple[str, int] | None = self.events.first_match(topic, embedding)
        except LookupError:
            raise ReplayError(
                f"there is no topic {topic} to rebuild from: name the embeddings topic "
                "with --topic (`cbir generations` lists each generation's topic)"
            ) from None
        if found is None:
            raise ReplayError(f"{topic} holds no embedding: nothing to rebuild from")
        return found

    def _building(
        self,
        options: ReplayOptions,
        topic: str,
        model: str,
        model_id: str,
        dim: int,
        live: Generation | None,
    ) -> Generation:
        """The generation this command fills from `topic`: a half-built one continued, or
        a new one."""
        index_type = options.index_type or (live.index_type if live else self.config.index_type)
        # the type's defaults, overridden by what was asked (HNSW wants M and efConstruction)
        params = {**self.index.default_params(index_type), **(options.index_params or {})}
        with self.registry.locked():
            for started in self.registry.active():
                if started.state != GenerationState.BUILDING or started.embeddings_topic != topic:
                    continue
                if options.restart:
                    self._abandon(started)
                    continue
                asked = options.index_type is not None or options.index_params is not None
                if asked and (started.index_type, started.index_params) != (index_type, params):
                    raise ReplayError(
                        f"{started.name} ({started.index_type} {started.index_params}) is half "
                        "built from the same source: run without index options to continue "
                        "it, or with --restart to abandon it and build the one asked for"
                    )
                self.index.create(
                    started.name,
                    started.model_id,
                    started.dim,
                    started.index_type,
                    started.index_params,
                )
                log.info("continuing", extra={"generation": started.name})
                return started
            generation = self.registry.register(
                alias=self.config.alias,
                model=model,
                model_id=model_id,
                dim=dim,
                embeddings_topic=topic,
                index_type=index_type,
                index_params=params,
                state=GenerationState.BUILDING,
                taken=self.index.exists,
            )
            try:
                self.index.create(generation.name, model_id, dim, index_type, params)
            except Exception as exc:  # Milvus refuses parameters as it pleases
                self._abandon(generation)
                raise ReplayError(
                    f"Milvus refused the index {index_type} {params}: {exc}; change --param"
                ) from exc
        log.info("building", extra={"generation": generation.name, "index_type": index_type})
        return generation

    def _abandon(self, generation: Generation) -> None:
        self.registry.set_state(generation, GenerationState.ABANDONED)
        self.index.drop(generation.name)
        self._forget_log_of(generation)
        log.info("abandoned", extra={"generation": generation.name})

    def _forget_log_of(self, generation: Generation) -> None:
        """The replay's consumer group, and the embeddings topic if nothing else uses it."""
        self.events.delete_consumer_group(self.config.replay_group(generation))
        in_use = {g.embeddings_topic for g in self.registry.all() if g.state.holds_topic}
        if generation.embeddings_topic not in in_use:
            self.events.delete_topic(generation.embeddings_topic)
            log.info("topic deleted", extra={"topic": generation.embeddings_topic})

    def _fill_and_switch(
        self,
        generation: Generation,
        source: str,
        stage: Stage,
        options: ReplayOptions,
        live: Generation | None,
    ) -> Generation:
        backfill = Backfill(
            self.config.destinations,
            self.events.reader(source, self.config.replay_group(generation)),
            self.events.writer(),
            stage,
            options.batch_size,
            options.max_rate,
        )
        try:
            replayed = self._follow_until_complete(generation, backfill, live)
        finally:
            backfill.close()
        if options.gated:
            self._gate(generation, live, options, replayed)
        self._switch(generation, options, replayed)
        return generation

    def _gate(
        self, generation: Generation, live: Generation | None, options: ReplayOptions, replayed: int
    ) -> None:
        """Judge the building generation beside the live one by the checks asked for; record
        the verdict with the generation; refuse the switch when any check finds it worse
        beyond its tolerance."""
        checks: list[Evaluation] = []
        if options.probe is not None:
            checks.append(self._probe_check(generation, live, options.probe, replayed))
        if options.collection is not None:
            checks.append(self._collection_check(generation, live, options.collection, replayed))
        verdict = Verdict(tuple(checks))
        self.registry.record_evaluation(generation, verdict.as_json())
        log.info("gate", extra={"generation": generation.name, **verdict.as_json()})
        self.report(ReplayStatus(generation.name, "gated", replayed, 0, 0.0, None, verdict.detail))
        if not verdict.passed:
            raise ReplayError(
                f"{generation.name} was not switched live: {verdict.refusals()}. The live "
                "generation keeps answering; the new one stays built (`cbir generations`): "
                "run the same command with --no-gate to switch anyway, or with --restart to "
                "abandon it"
            )

    def _probe_check(
        self, generation: Generation, live: Generation | None, probe: Probe, replayed: int
    ) -> Evaluation:
        self._evaluating(generation, replayed, f"{probe.metric} on {len(probe.images)} probes")
        quality = partial(
            probe_quality, probe, embedders=self.embedders, index=self.index, metadata=self.metadata
        )
        value = quality(generation=generation)
        live_value = quality(generation=live) if live is not None else None
        return gate(probe.metric, value, len(probe.images), live_value, probe.tolerance)

    def _collection_check(
        self,
        generation: Generation,
        live: Generation | None,
        check: CollectionCheck,
        replayed: int,
    ) -> Evaluation:
        self._evaluating(generation, replayed, f"{check.metric} on {check.sample} sampled images")
        if self.judge is None:
            return skipped(COLLECTION, check.metric, check.tolerance, "no judge was given")
        return self.judge.evaluate(check, generation, live)

    def _evaluating(self, generation: Generation, replayed: int, what: str) -> None:
        self.report(ReplayStatus(generation.name, "evaluating", replayed, 0, 0.0, None, what))

    def _follow_until_complete(
        self, generation: Generation, backfill: Backfill, live: Generation | None
    ) -> int:
        """Replay until the new generation may go live; the events replayed."""
        last_check = 0.0
        start = backfill.lag(fresh=True)
        self.report(ReplayStatus(generation.name, "replaying", 0, start, 0.0, None))
        while True:
            read = backfill.step()
            behind = backfill.lag()
            due = not behind and not read and time.monotonic() - last_check >= CHECK_EVERY_S
            if due:  # the end as the last fetch saw it: confirm it with the broker
                behind = backfill.lag(fresh=True)
            status = ReplayStatus(
                generation.name,
                "replaying",
                backfill.throughput.total,
                behind,
                backfill.throughput.rate,
                backfill.throughput.eta_s(behind),
            )
            if behind or not due:
                self.report(status)
                continue
            last_check = time.monotonic()
            verdict = switch_verdict(self._check(generation, live, behind))
            if verdict is None:
                return status.replayed
            self.report(
                ReplayStatus(
                    generation.name, "waiting", status.replayed, 0, status.rate, None, verdict
                )
            )

    def _check(
        self, generation: Generation, live: Generation | None, replay_lag: int
    ) -> SwitchCheck:
        processors_lag = 0
        if live is not None:  # the processors feed the new generation too: they must be done
            processors_lag = self.events.lag(self.config.app_id, [generation.embeddings_topic])
        new_count = self.index.count(generation.name)
        if live is not None:
            reference = self.index.count(live.name)
        else:
            reference = self.metadata.status_counts().get("indexed", 0)
        return SwitchCheck(replay_lag, processors_lag, new_count, reference)

    def _switch(self, generation: Generation, options: ReplayOptions, replayed: int) -> None:
        with self.registry.locked():
            self.index.switch_alias(generation.name)
            retired = self.registry.make_live(
                generation, options.grace_s, self.index.timestamp_now()
            )
        log.info(
            "switched",
            extra={"generation": generation.name, "retired": retired, "replayed": replayed},
        )
        self.report(
            ReplayStatus(generation.name, "switched", replayed, 0, 0.0, 0.0, ", ".join(retired))
        )
        if not retired or options.keep_old:
            return
        deadline = time.monotonic() + options.grace_s + 0.5  # past drop_after, to the second
        while time.monotonic() < deadline:
            left = deadline - time.monotonic()
            self.report(
                ReplayStatus(generation.name, "grace", replayed, 0, 0.0, left, ", ".join(retired))
            )
            time.sleep(min(1.0, max(left, 0.0)))
        self.prune()
