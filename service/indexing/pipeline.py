"""The Ray Data pipeline of `tuwen index`: plan rows → read + decode + preprocess + thumbnail → embed (an
actor pool, each actor holding the bundle's towers) → the driver, which cuts the ordered stream back into
shards and commits each one (``OutputDir.finish_shard``).

Decoding runs in CPU tasks feeding the actors (``--decode-in tasks``, the default), so it scales with the
cluster's CPUs however few actors there are, or in the actors themselves (``actors``: one per CPU by
default, each decoding the batches it embeds; for a tower that costs less than decoding).

Order is preserved (``preserve_order``) so shards complete one after another and the driver holds at
most a shard or two of rows; a failed item travels through the pipeline as a row with ``error`` set, so it
is counted and reported, never dropped and never fatal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from service.commands.errors import CommandError
from service.config import Settings
from service.indexing.model import Encoder, ModelInfo, Preprocessor
from service.indexing.shards import OutputDir, ShardResult, arrow_schema, failure
from service.indexing.sources import Row, read_bytes

_preprocessors: dict[str, Preprocessor] = {}
# What ray.init raises when a local node's process did not come up in time (gcs_server, raylet).
_RAY_START_TIMEOUTS = ("timed out during startup", "Timed out waiting for file")


DecodeIn = Literal["tasks", "actors"]


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: a local Ray on this machine
    num_cpus: int | None = None  # local Ray only
    actors: int | None = None  # embedding actors (each loads the towers); None: default_actors
    actor_cpus: float | None = None  # None: 1 on a cluster, 0 (share the cores) on a local Ray
    actor_gpus: float = 0.0  # 1 per actor on GPU nodes: Ray places one actor per GPU
    # "tasks": CPU tasks decode for the actors; "actors": each actor decodes the batches it embeds
    decode_in: DecodeIn = "tasks"
    batch_size: int = 64  # items per embedding actor call (tower calls: the service's max_batch_*)
    decode_batch: int = 16  # items per decode task call

    @property
    def decode_tasks(self) -> bool:
        """Decode in CPU tasks that feed the actors, so decoding scales with the cluster's CPUs whatever
        the number of actors: GPU actors, and a big CPU tower that runs best as one actor using every core
        (ViT-B-16 int8 on 2 cores: 12.0 images/s as one 2-thread actor, 10.1 as two 1-thread ones). Or in
        the actors, an actor per CPU: for a tower that costs less than decoding, one process per core
        doing both sends no pixels through Ray's object store and starts one kind of Ray worker instead of
        two (each one's start and its import of Ray Data cost ~1 s of a core): the tiny test model indexes
        5,000 images ~25% faster so on 2 cores (docs/benchmarks.md)."""
        return self.decode_in == "tasks"


@dataclass
class StageSeconds:
    """Where an index run's time went: seconds summed over the tasks and actors that did the work
    (``decode``, ``embed``) and the driver's own (``write``: cutting shards, Parquet, the manifest)."""

    decode: float = 0.0
    embed: float = 0.0
    write: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        return {"decode": self.decode, "embed": self.embed, "write": self.write, **self.extra}


@dataclass(frozen=True)
class ActorSizing:
    cpus: float  # what Ray reserves for each embedding actor
    threads: int | None  # its ONNX Runtime intra-op threads (None: the runtime's choice, every core)


def default_actors(
    resources: Mapping[str, float], options: RayOptions, tower_bytes: int, decode_bytes: int
) -> int:
    """How many actors ``--actors`` left out means, from the cluster's resources when the job starts.

    GPU towers: one per ``--actor-gpus`` share of the GPUs. CPU towers fed by decode tasks: one, the tasks
    taking the other CPUs. Actors that decode their own batches: one per CPU (per ``--actor-cpus`` CPUs
    on a cluster), but no more than fit in half of Ray's memory, each holding the towers twice over (the
    weights and ONNX Runtime's buffers) and reserving ``decode_bytes`` for a decode: a 64-core machine
    does not load a big model 64 times, nor reserve more memory than Ray has.
    """
    if options.actor_gpus > 0:
        return max(1, int(resources.get("GPU", 0.0) // options.actor_gpus))
    if options.decode_tasks:
        return 1
    by_cpu = int(resources.get("CPU", 1.0) // (options.actor_cpus or 1.0))
    memory = resources.get("memory", 0.0)
    by_memory = int(memory / 2 // (2 * tower_bytes + decode_bytes)) if memory else by_cpu
    return max(1, min(by_cpu, by_memory))


def actor_sizing(
    cluster_cpus: float, actors: int, wanted: float | None, local: bool, *, decode_tasks: bool
) -> ActorSizing:
    """What each embedding actor reserves and how many threads it runs, for ``--actor-cpus wanted``.

    ``0`` (a local Ray's default) reserves nothing: the actors' threads (and the decode tasks, if any)
    share the cores, as the service's own threads do, so no core idles whichever side is the bottleneck (a
    reserved core sat idle whenever its side had nothing to do: with a big tower, decoding; with a small
    one, the tower). On a local Ray the cores are then split between the actors' threads. More than 0 (a
    cluster's default: 1) is reserved, with as many threads; on a local Ray the actors fit in its CPUs and,
    beside ``decode_tasks``, leave one of them to the tasks (else Ray Data would wait for one forever).
    """
    if wanted is None:
        wanted = 0.0 if local else 1.0
    if wanted == 0:
        return ActorSizing(0.0, max(1, int(cluster_cpus) // actors) if local else None)
    if local:
        spare = cluster_cpus - 1 if decode_tasks else cluster_cpus
        if spare <= 0:
            raise CommandError(
                f"a local Ray with {cluster_cpus:g} CPU cannot run decode tasks beside embedding actors "
                "that reserve CPUs: give it at least 2 (--num-cpus), or --actor-cpus 0"
            )
        wanted = min(wanted, spare / actors)
    return ActorSizing(wanted, max(1, round(wanted)))


def init_ray(options: RayOptions) -> Any:
    import ray

    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, log_to_driver=False)
        else:
            for attempt in range(3):
                try:
                    ray.init(num_cpus=options.num_cpus, include_dashboard=False, log_to_driver=False)
                    break
                except Exception as exc:
                    # A busy machine: Ray gives its GCS server and its raylet a fixed 30 s each to come
                    # up, then raises a bare Exception (or RuntimeError) and leaves a half-started node
                    # behind. Shut that down and start again.
                    if not any(m in str(exc) for m in _RAY_START_TIMEOUTS) or attempt == 2:
                        raise
                    ray.shutdown()
    from ray.data import DataContext

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # shards finish in order: the driver buffers little
    context.enable_progress_bars = False  # ours is one bar over items, not one per operator
    return ray


def decode_batch(batch: dict[str, np.ndarray], settings: Settings) -> dict[str, np.ndarray]:
    """Ray task: read each image's bytes, decode and preprocess it as the service does, render its
    thumbnail; an input that fails gets ``error`` instead."""
    from service.preprocessing.image import ImageError

    started = time.perf_counter()
    key = settings.model_dump_json()
    prepare = _preprocessors.get(key) or _preprocessors.setdefault(key, Preprocessor(settings))
    n = len(batch["id"])
    pixels, thumbs, errors = [b""] * n, [b""] * n, list(batch["error"])
    for i in range(n):
        if errors[i] or batch["kind"][i] != "image":
            continue
        try:
            values, thumbs[i] = prepare(read_bytes(str(batch["ref"][i])))
            pixels[i] = values.tobytes()
        except ImageError as exc:
            errors[i] = f"{exc.code}: {exc.message}"
        except (OSError, ValueError) as exc:
            errors[i] = f"image_unreadable: cannot read the image ({exc})"
    return {
        **{k: v for k, v in batch.items() if k != "ref"},
        "pixels": np.array(pixels, dtype=object),
        "thumbnail": np.array(thumbs, dtype=object),
        "error": np.array(errors, dtype=object),
        "decode_s": np.full(n, (time.perf_counter() - started) / max(n, 1)),
    }


class EmbedActor:
    """Ray actor: the towers, loaded once; embeds the batch's images and texts, after decoding them itself
    when ``decodes`` (no decode tasks before it)."""

    def __init__(self, settings: Settings, image_size: int, dim: int, decodes: bool) -> None:
        self.encoder = Encoder(settings)
        self.decode_settings = settings if decodes else None
        self.shape = (image_size, image_size, 3)
        self.dim = dim

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.decode_settings is not None:
            batch = decode_batch(batch, self.decode_settings)
        started = time.perf_counter()
        ok = np.array([not e for e in batch["error"]], dtype=bool)
        vectors = np.zeros((len(ok), self.dim), np.float32)
        images = np.flatnonzero(ok & (batch["kind"] == "image"))
        texts = np.flatnonzero(ok & (batch["kind"] == "text"))
        if len(images):
            pixels = np.stack(
                [np.frombuffer(batch["pixels"][i], np.uint8).reshape(self.shape) for i in images]
            )
            vectors[images] = self.encoder.images(pixels)
        if len(texts):
            vectors[texts] = self.encoder.texts([str(batch["text"][i]) for i in texts])
        n = len(ok)
        return {
            **{k: v for k, v in batch.items() if k != "pixels"},
            "vector": vectors,
            "embed_s": np.full(n, (time.perf_counter() - started) / max(n, 1)),
        }


def run(
    rows: Sequence[Row],
    shard_size: int,
    pending: list[int],
    settings: Settings,
    out: OutputDir,
    model: ModelInfo,
    options: RayOptions,
    on_items: Callable[[int], None] = lambda n: None,
    seconds: StageSeconds | None = None,
) -> list[ShardResult]:
    """Index the ``pending`` shards of ``rows``; each is committed as soon as its last item arrives.
    ``seconds``, when given, accumulates where the time went."""
    seconds = seconds if seconds is not None else StageSeconds()
    ray = init_ray(options)
    expected = {s: len(rows[s * shard_size : (s + 1) * shard_size]) for s in pending}
    items = [
        {**row.as_dict(), "shard": s} for s in pending for row in rows[s * shard_size : (s + 1) * shard_size]
    ]
    if not items:
        return []
    # A decode holds a full image of up to MAX_IMAGE_PIXELS (RGB plus a converted copy): reserved for it.
    decode_bytes = settings.max_image_pixels * 6
    resources = ray.cluster_resources()
    actors = options.actors or default_actors(resources, options, model.tower_bytes, decode_bytes)
    sizing = actor_sizing(
        resources.get("CPU", 0.0),
        actors,
        options.actor_cpus,
        not options.address,
        decode_tasks=options.decode_tasks,
    )
    # TUWEN_INTRA_OP_THREADS still wins when set.
    actor_settings = settings
    if settings.intra_op_threads is None and sizing.threads is not None:
        actor_settings = settings.model_copy(update={"intra_op_threads": sizing.threads})
    # Enough blocks for every actor to have one in hand and the next coming, few enough that a shard
    # is a handful of them.
    blocks = max(1, min(len(items) // max(options.decode_batch, 1), max(len(pending) * 4, 2 * actors)))
    decode_memory = {"memory": decode_bytes}
    dataset = ray.data.from_items(items, override_num_blocks=blocks)
    if options.decode_tasks:
        # Reserving the memory also keeps Ray from fusing these tasks into the embedding actors (their
        # resources differ), so decoding scales with the cluster's CPUs, apart from the few model replicas.
        dataset = dataset.map_batches(
            decode_batch,
            fn_args=(settings,),
            batch_size=options.decode_batch,
            batch_format="numpy",
            num_cpus=1,
            **decode_memory,
        )
    dataset = dataset.map_batches(
        EmbedActor,
        fn_constructor_args=(actor_settings, model.image_size, model.dim, not options.decode_tasks),
        batch_size=options.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=sizing.cpus,
        num_gpus=options.actor_gpus,
        **({} if options.decode_tasks else decode_memory),
    )
    collected: dict[int, list[dict[str, Any]]] = {}
    finished: list[ShardResult] = []
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        started = time.perf_counter()
        seconds.decode += float(batch["decode_s"].sum())
        seconds.embed += float(batch["embed_s"].sum())
        for i in range(len(batch["id"])):
            shard = int(batch["shard"][i])
            collected.setdefault(shard, []).append({k: batch[k][i] for k in batch})
            if len(collected[shard]) == expected[shard]:
                finished.append(_commit(shard, collected.pop(shard), out, model.dim))
        seconds.write += time.perf_counter() - started
        on_items(len(batch["id"]))
    if collected:  # cannot happen unless Ray lost rows: refuse to mark such shards done
        raise RuntimeError(f"shards {sorted(collected)} came back incomplete from Ray; rerun to redo them")
    return finished


def _commit(shard: int, rows: list[dict[str, Any]], out: OutputDir, dim: int) -> ShardResult:
    import pyarrow as pa

    good = [r for r in rows if not r["error"]]
    failures = [
        failure({k: str(r[k]) for k in ("kind", "id", "source")}, str(r["error"])) for r in rows if r["error"]
    ]
    vectors = (
        np.stack([r["vector"] for r in good]).astype(np.float32) if good else np.zeros((0, dim), np.float32)
    )
    table = pa.table(
        {
            "kind": [str(r["kind"]) for r in good],
            "id": [str(r["id"]) for r in good],
            "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim),
            "metadata": [str(r["metadata"]) for r in good],
            "text": [str(r["text"]) if r["kind"] == "text" else None for r in good],
            "thumbnail": [bytes(r["thumbnail"]) if r["kind"] == "image" else None for r in good],
        },
        schema=arrow_schema(dim),
    )
    result = ShardResult(index=shard, items=len(rows), embedded=len(good), failures=failures)
    out.finish_shard(result, table)
    return result


def progress(total: int, done: int, enabled: bool) -> Any:
    """A rich progress bar over items, shown only on a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("index"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not (enabled and sys.stdout.isatty()),
    )
    task = bar.add_task("index", total=total, completed=done)
    return bar, lambda n: bar.advance(task, n)
