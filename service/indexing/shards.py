"""The output directory of `tuwen index`: Parquet shards, the done-manifest, the report and the summary.

```
OUT/plan.json            what was planned: source, model, shard size, item count, a hash of (kind, id)s
OUT/shard-00000.parquet  kind, id, vector (float32[dim]), metadata (JSON text), text, thumbnail (JPEG)
OUT/_done.json           finished shards, each with its counts and failures (rewritten atomically)
OUT/report.jsonl         one line per failed item: kind, id, source, code, message
OUT/summary.json         read, embedded, failed (and loaded, after a load)
```

A shard is written to a temporary name and renamed, then recorded in ``_done.json`` (also written by
rename): a run killed at any moment leaves only finished shards recorded, and the next run redoes the
rest. A recorded shard's file is complete; a shard file without a record is rewritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.commands.errors import CommandError
from service.indexing.sources import Row

PLAN, DONE, REPORT, SUMMARY = "plan.json", "_done.json", "report.jsonl", "summary.json"


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, value: Any) -> None:
    write_atomically(path, json.dumps(value, ensure_ascii=False, indent=1).encode())


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


@dataclass
class ShardResult:
    """What one shard produced (kept in ``_done.json``)."""

    index: int
    items: int
    embedded: int
    failures: list[dict[str, str]] = field(default_factory=list)


def failure(row: Row | dict[str, str], error: str) -> dict[str, str]:
    values = row.as_dict() if isinstance(row, Row) else row
    code, _, message = error.partition(": ")
    return {
        "kind": values["kind"],
        "id": values["id"],
        "source": values["source"],
        "code": code,
        "message": message,
    }


class OutputDir:
    def __init__(self, root: Path) -> None:
        self.root = root

    def start(self, rows: Sequence[Row], shard_size: int, header: dict[str, Any]) -> dict[int, ShardResult]:
        """Record the plan (or check it is the one already recorded) and return the finished shards."""
        self.root.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        for row in rows:
            digest.update(f"{row.kind}\t{row.id}\t{row.error}\n".encode())
        plan = {
            **header,
            "shard_size": shard_size,
            "items": len(rows),
            "shards": -(-len(rows) // shard_size),
            "plan_sha256": digest.hexdigest(),
        }
        recorded = read_json(self.root / PLAN)
        if recorded is not None and recorded != plan:
            changed = sorted(k for k in plan if recorded.get(k) != plan[k])
            raise CommandError(
                f"{self.root} holds an index of a different plan (differs in {', '.join(changed)}); "
                "resume with the same source, bundle and --shard-size, or write to a new --out"
            )
        write_json(self.root / PLAN, plan)
        return self.done()

    def plan(self) -> dict[str, Any]:
        plan = read_json(self.root / PLAN)
        if plan is None:
            raise CommandError(
                f"{self.root} is not a `tuwen index` output (no {PLAN}); run `tuwen index` first"
            )
        return dict(plan)

    def done(self) -> dict[int, ShardResult]:
        recorded = read_json(self.root / DONE) or {}
        return {int(k): ShardResult(**v) for k, v in recorded.items()}

    def finish_shard(self, result: ShardResult, table: Any) -> None:
        """Write the shard's Parquet, then record it: the record is the commit point."""
        import pyarrow.parquet as pq

        path = self.root / shard_name(result.index)
        tmp = path.with_name(f".{path.name}.tmp")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        done = self.done()
        done[result.index] = result
        write_json(self.root / DONE, {str(k): vars(v) for k, v in sorted(done.items())})

    def shards(self) -> Iterator[tuple[int, Path]]:
        for index in sorted(self.done()):
            yield index, self.root / shard_name(index)

    def write_report(self) -> list[dict[str, str]]:
        failures = [
            f for result in sorted(self.done().values(), key=lambda r: r.index) for f in result.failures
        ]
        lines = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures)
        write_atomically(self.root / REPORT, lines.encode())
        return failures

    def counts(self) -> dict[str, int]:
        done = self.done().values()
        return {
            "read": sum(r.items for r in done),
            "embedded": sum(r.embedded for r in done),
            "failed": sum(len(r.failures) for r in done),
        }

    def summary(self) -> dict[str, Any]:
        return dict(read_json(self.root / SUMMARY) or {})

    def update_summary(self, **values: Any) -> dict[str, Any]:
        summary = {**self.summary(), **values}
        write_json(self.root / SUMMARY, summary)
        return summary


def arrow_schema(dim: int) -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("kind", pa.string()),
            ("id", pa.string()),
            ("vector", pa.list_(pa.float32(), dim)),
            ("metadata", pa.string()),
            ("text", pa.string()),
            ("thumbnail", pa.binary()),
        ]
    )
