"""Avro events in Avro single-object encoding: C3 01, the writer schema's 8-byte CRC-64-AVRO
fingerprint (little-endian), then the Avro binary body. A consumer finds the writer schema by
its fingerprint among every version in schemas/avro/ and reads the event with the newest
version of that record (Avro schema resolution), so a newer reader reads every older event.

Schema files are `<snake_name>.v<N>.avsc`. A schema that uses another named record declares
which version in `"x-uses": {"cbir.ImageMetadata": 1}`, so every version stays reproducible.
The compatibility rules are in schemas/README.md; `check_backward_compatible` enforces them.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from cbir.domain.errors import Permanent

SCHEMA_DIR = Path(__file__).parent / "avro"
MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8
_FILE_NAME = re.compile(r"^(?P<stem>[a-z_]+)\.v(?P<version>\d+)\.avsc$")
_PROMOTIONS = {
    ("int", "long"),
    ("int", "float"),
    ("int", "double"),
    ("long", "float"),
    ("long", "double"),
    ("float", "double"),
    ("string", "bytes"),
    ("bytes", "string"),
}


class MalformedEvent(Permanent, ValueError):
    """Bytes that are not an event this codec can read; the message says why."""


class IncompatibleSchema(ValueError):
    """A schema version that breaks the compatibility rules."""


@dataclass(frozen=True)
class SchemaVersion:
    name: str  # full name, e.g. cbir.ImageUploaded
    version: int
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian, as on the wire
    raw: dict[str, Any]


class SchemaRegistry:
    """Every version of every schema in a folder."""

    def __init__(self, directory: Path = SCHEMA_DIR) -> None:
        self._raw: dict[tuple[str, int], dict[str, Any]] = {}
        for path in sorted(directory.glob("*.avsc")):
            match = _FILE_NAME.match(path.name)
            if match is None:
                raise IncompatibleSchema(f"{path.name}: schema files are named <name>.v<N>.avsc")
            raw = json.loads(path.read_text())
            self._raw[(f"{raw['namespace']}.{raw['name']}", int(match["version"]))] = raw
        self._versions: dict[tuple[str, int], SchemaVersion] = {}
        for name, version in self._raw:
            self._parse(name, version)
        self._by_fingerprint = {v.fingerprint: v for v in self._versions.values()}
        # the newest version of each name, looked up per event decoded (sorting every time
        # was 3 % of a replay's samples)
        self._latest: dict[str, SchemaVersion] = {}
        for v in sorted(self._versions.values(), key=lambda v: v.version):
            self._latest[v.name] = v

    def _parse(self, name: str, version: int) -> SchemaVersion:
        key = (name, version)
        if key in self._versions:
            return self._versions[key]
        if key not in self._raw:
            raise IncompatibleSchema(f"{name} v{version} is used but has no schema file")
        raw = self._raw[key]
        named: dict[str, Any] = {}
        for used, used_version in raw.get("x-uses", {}).items():
            named[used] = self._parse(used, int(used_version)).parsed
        body = {k: v for k, v in raw.items() if k != "x-uses"}
        parsed = fastavro.parse_schema(body, named_schemas=named)
        canonical = to_parsing_canonical_form(parsed)
        print_ = int(fingerprint(canonical, "CRC-64-AVRO"), 16).to_bytes(8, "little")
        self._versions[key] = SchemaVersion(name, version, parsed, print_, raw)
        return self._versions[key]

    def names(self) -> list[str]:
        return sorted({name for name, _ in self._versions})

    def versions(self, name: str) -> list[SchemaVersion]:
        full = self._full_name(name)
        return sorted(
            (v for (n, _), v in self._versions.items() if n == full), key=lambda v: v.version
        )

    def latest(self, name: str) -> SchemaVersion:
        newest = self._latest.get(self._full_name(name))
        if newest is None:
            raise KeyError(f"no schema named {name}; known: {', '.join(self.names())}")
        return newest

    def by_fingerprint(self, print_: bytes) -> SchemaVersion | None:
        return self._by_fingerprint.get(print_)

    @staticmethod
    def _full_name(name: str) -> str:
        return name if "." in name else f"cbir.{name}"


class EventCodec:
    """Encode with the newest version of a record; decode any version into the newest."""

    def __init__(self, registry: SchemaRegistry | None = None) -> None:
        self.registry = registry or default_registry()

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        writer = self.registry.latest(name)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer.parsed, record)
        return MAGIC + writer.fingerprint + body.getvalue()

    def decode(self, data: bytes | None) -> tuple[str, dict[str, Any]]:
        """The record's full name and its fields, read with the newest schema of that name."""
        if not data:
            raise MalformedEvent("empty value (a tombstone is not an event)")
        if data[:2] != MAGIC or len(data) < HEADER_SIZE:
            raise MalformedEvent(
                f"not Avro single-object encoding (starts with {data[:2].hex() or 'nothing'}, "
                "expected c301)"
            )
        writer = self.registry.by_fingerprint(data[2:HEADER_SIZE])
        if writer is None:
            raise MalformedEvent(
                f"unknown writer schema, fingerprint {data[2:HEADER_SIZE].hex()}: the producer "
                "used a schema that is not in schemas/avro (upgrade this consumer)"
            )
        reader = self.registry.latest(writer.name)
        # the same version: no reader schema, so fastavro neither compares the two schemas
        # nor resolves one against the other (a deep comparison per event, profiled at a
        # sixth of a replay's CPU)
        resolved = None if reader is writer else reader.parsed
        try:
            record = fastavro.schemaless_reader(
                io.BytesIO(data[HEADER_SIZE:]), writer.parsed, resolved
            )
        except (EOFError, ValueError, TypeError, IndexError, UnicodeDecodeError) as exc:
            raise MalformedEvent(
                f"{writer.name} v{writer.version} body does not decode: {type(exc).__name__}: {exc}"
            ) from exc
        return writer.name, record  # type: ignore[return-value]


@lru_cache(maxsize=1)
def default_registry() -> SchemaRegistry:
    return SchemaRegistry()


def _type_name(avro_type: Any) -> str:
    if isinstance(avro_type, dict):
        return str(avro_type["type"])
    if isinstance(avro_type, list):
        return "union"
    return str(avro_type)


def check_backward_compatible(old: dict[str, Any], new: dict[str, Any], path: str = "") -> None:
    """Raise IncompatibleSchema unless a reader with `new` can read data written with `old`.

    The rules (schemas/README.md): add fields only with a default; remove only fields that had
    a default; change a type only by an Avro promotion; keep record names; unions may gain
    branches but not lose them.
    """
    where = path or new.get("name", "record")
    old_fields = {f["name"]: f for f in old.get("fields", [])}
    for field in new.get("fields", []):
        name = field["name"]
        if name not in old_fields:
            if "default" not in field:
                raise IncompatibleSchema(f"{where}.{name} is new and has no default")
            continue
        old_type, new_type = old_fields[name]["type"], field["type"]
        _check_type(old_type, new_type, f"{where}.{name}")
    for name, field in old_fields.items():
        if name not in {f["name"] for f in new.get("fields", [])} and "default" not in field:
            raise IncompatibleSchema(f"{where}.{name} was removed but had no default")


def _check_type(old: Any, new: Any, where: str) -> None:
    if isinstance(old, dict) and isinstance(new, dict) and old.get("type") == "record":
        if new.get("name") != old.get("name"):
            raise IncompatibleSchema(f"{where}: record {old.get('name')} renamed {new.get('name')}")
        check_backward_compatible(old, new, where)
        return
    if isinstance(old, list) or isinstance(new, list):
        old_branches = {_type_name(t) for t in (old if isinstance(old, list) else [old])}
        new_branches = {_type_name(t) for t in (new if isinstance(new, list) else [new])}
        if not old_branches <= new_branches:
            raise IncompatibleSchema(f"{where}: union lost {sorted(old_branches - new_branches)}")
        return
    old_name, new_name = _type_name(old), _type_name(new)
    if old_name != new_name and (old_name, new_name) not in _PROMOTIONS:
        raise IncompatibleSchema(f"{where}: {old_name} cannot become {new_name}")
