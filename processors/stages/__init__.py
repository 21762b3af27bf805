"""The processors' stages, one module each, written against the ports (`cbir/ports/`): what to
produce for a batch of messages, synchronously. The Faust agents (`processors/app.py`) and
the replay (`cbir/replay/backfill.py`) run them alike; unit tests hand them in-memory fakes.

Guarantee: `process` returns only when every message of the batch has its outcome: a message
forwarded, or a dead letter with the reason (and the image's row marked failed). A service
that is away is waited for, with back-off, so nothing is acknowledged, and so nothing is lost,
meanwhile; reprocessing after a crash writes the same rows and vectors again (content ids,
upserts).
"""

from processors.stages.base import Stage
from processors.stages.duplicates import DuplicatesStage
from processors.stages.embed import EmbedStage, Route
from processors.stages.features import FeaturesStage
from processors.stages.index import IndexStage
from processors.stages.object_events import ObjectEventsStage
from processors.stages.thumbnails import ThumbnailsStage

__all__ = [
    "DuplicatesStage",
    "EmbedStage",
    "FeaturesStage",
    "IndexStage",
    "ObjectEventsStage",
    "Route",
    "Stage",
    "ThumbnailsStage",
]
