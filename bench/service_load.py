"""Service end to end: QPS and latency of a real ``tuwen serve`` over 100k items, closed and open loop.

    .venv/bin/python bench/service_load.py                         # tiny-vit bundle, 100k items, defaults
    .venv/bin/python bench/service_load.py --arch ViT-B-16 --duration 10
    .venv/bin/python bench/service_load.py --set TUWEN_BATCH_WAIT_MS=0 --profile

What it does, in order:
1. exports a random ``--arch`` bundle (kept in ``--workdir``) and writes ``--items`` clustered unit vectors
   (a mixture of Gaussian clusters, the same generator as ``bench/vector_search.py``) straight into the
   default local Milvus server through ``service.store`` — not through the image tower — then waits for
   the index;
2. starts ``tuwen serve`` on that data (uvicorn, loopback only) and waits for ``/readyz``;
3. measures the bare parts in this process: tokenise + text tower (ONNX Runtime, same bundle, same
   threads) and ``VectorStore.search`` against the service's own Milvus server, one query at a time;
4. drives ``/search`` (text queries of 4–30 Chinese characters), ``/search`` (a JPEG query image) and
   ``/embed`` (one text) from an asyncio client on uvloop: closed loop at each ``--concurrency`` level for
   ``--duration`` seconds after a warm-up, then open loop with Poisson arrivals at ``--rates`` (latency from
   the scheduled arrival, so a slow server cannot hide queueing: no coordinated omission). Requests are
   built and encoded once with httpx; the default client writes them over keep-alive HTTP/1.1 streams
   itself, because httpx's AsyncClient costs ~3 ms of CPU a request on this machine and became the
   bottleneck (``--client httpx`` to compare);
5. prints the tables, the service overhead at concurrency 1 (``/search`` p50 minus bare tower p50 minus
   bare Milvus p50; target <= 5 ms) and the QPS ratio concurrency 32 / 1 (target >= 1.5), and saves JSON
   under ``bench/results/``. ``--profile`` records a py-spy flame graph of the server under concurrency 32.

The client runs on the same machine as the server (2 cores here): its CPU use is part of what limits QPS.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # bench scripts run from a checkout

from bench.common import (  # noqa: E402
    RESULTS,
    Service,
    chinese_queries,
    ensure_bundle,
    jpeg_images,
    machine,
    percentiles_ms,
    print_table,
    save_json,
    serve,
)

ENDPOINTS = ("search-text", "search-image", "embed-text")
TOP_K = 10
LATENCY_COLUMNS = ["endpoint", "qps", "p50_ms", "p95_ms", "p99_ms", "errors"]
CPU_COLUMNS = ["cpu_server_ms", "cpu_milvus_ms", "cpu_client_ms"]


# -- data ---------------------------------------------------------------------------------------------


def populate(bundle: Path, data_dir: Path, items: int, seed: int = 0) -> dict[str, Any]:
    """Write ``items`` clustered vectors into the image collection of the default local Milvus (once)."""
    from bench.vector_search import mixture, wait_indexed
    from service.store import Item, VectorStore

    marker = data_dir / "populated.json"
    model, dim = manifest_model(bundle)
    want = {"model": model, "dim": dim, "items": items, "seed": seed}
    if marker.is_file() and _read_json(marker).get("want") == want:
        return _read_json(marker)
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(16, items // 50), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = mixture(items, centres, rng)
    store = VectorStore(str(data_dir / "milvus"), model=model, dim=dim, timeout_s=120)
    try:
        store.ensure_collections()
        started = time.perf_counter()
        for start in range(0, items, 2000):
            stop = min(items, start + 2000)
            store.upsert(
                "image",
                [
                    Item(f"img-{i:07d}", vectors[i], metadata={"category": f"c{i % 10}"})
                    for i in range(start, stop)
                ],
            )
        insert_s = time.perf_counter() - started
        index_s = wait_indexed(store, "image")
        index_s += settle(store, "image")
    finally:
        store.close()
    info = {"want": want, "insert_s": insert_s, "index_s": index_s, "index": store.index.index_type}
    marker.write_text(_json(info))
    print(f"wrote {items} vectors (dim {dim}) in {insert_s:.0f} s, indexed in {index_s:.0f} s")
    return info


def settle(store: Any, kind: str, timeout_s: float = 600) -> float:
    """Compact now and wait, then wait for the index again: otherwise Milvus merges the small insert
    segments and re-indexes them in the background during the measurement (seen at dim 512: the server
    burnt a core for minutes and search QPS collapsed). Returns the seconds waited."""
    from bench.vector_search import wait_indexed

    client, name = store._connect(), store.collections[kind]  # bench-only: the live client
    started = time.perf_counter()
    job = client.compact(name)
    while client.get_compaction_state(job) != "Completed" and time.perf_counter() - started < timeout_s:
        time.sleep(1)
    return time.perf_counter() - started + wait_indexed(store, kind)


def manifest_model(bundle: Path) -> tuple[str, int]:
    from service.bundle import Bundle

    b = Bundle.load(bundle)
    return b.model_name, b.embed_dim


# -- the bare parts -----------------------------------------------------------------------------------


def bare_parts(
    bundle: Path, data_dir: Path, queries: list[str], threads: int | None, precision: str
) -> dict[str, Any]:
    """Tokenise + text tower, and VectorStore.search on the service's Milvus, one query at a time."""
    import yaml

    from service.bundle import Bundle
    from service.engines import load_towers
    from service.store import VectorStore

    b = Bundle.load(bundle)
    towers = load_towers(b, backend="onnxruntime", precision=precision, threads=threads)  # type: ignore[arg-type]
    towers.warmup()
    tokenizer = b.tokenizer()
    tower_s, vectors = [], []
    for i, q in enumerate([*queries[:20], *queries]):
        t0 = time.perf_counter()
        vec = towers.text.embed(*tokenizer.pad(tokenizer.encode([q])))[0]
        if i >= 20:  # the first 20 warm up
            tower_s.append(time.perf_counter() - t0)
            vectors.append(vec)
    # The service's own Milvus server (the local default writes its port into its config).
    config = yaml.safe_load((data_dir / "milvus" / "configs" / "milvus.yaml").read_text())
    uri = f"http://127.0.0.1:{config['proxy']['port']}"
    store = VectorStore(uri, model=b.model_name, dim=b.embed_dim, timeout_s=30)
    milvus_s = []
    try:
        for i, vec in enumerate([*vectors[:20], *vectors]):
            t0 = time.perf_counter()
            store.search("image", [vec.tolist()], top_k=TOP_K)
            if i >= 20:
                milvus_s.append(time.perf_counter() - t0)
    finally:
        store._drop_client()  # only the connection: the server belongs to the service
    return {"text_tower": percentiles_ms(tower_s), "milvus_search": percentiles_ms(milvus_s)}


# -- the load generator -------------------------------------------------------------------------------


@dataclass
class Sample:
    sent: float  # scheduled (open loop) or actual (closed loop) send time
    done: float
    status: int  # 0 = transport error, -1 = not sent (open loop over its in-flight cap)
    timing: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """One request, encoded once: the load generator must not spend the cores it shares with the server."""

    request: httpx.Request
    wire: bytes  # the HTTP/1.1 bytes the raw client writes


def prepare(request: httpx.Request) -> Prepared:
    body = request.read()
    target = request.url.raw_path.decode()
    head = [f"{request.method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in request.headers.items())]
    return Prepared(request, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def request_maker(
    url: str, endpoint: str, queries: list[str], images: list[bytes]
) -> Callable[[int], Prepared]:
    """Request ``i`` of an endpoint's mix (queries and images cycle), each variant encoded once."""
    variants = len(images) if endpoint == "search-image" else len(queries)

    @functools.cache
    def variant(k: int) -> Prepared:
        if endpoint == "search-text":
            return prepare(httpx.Request("POST", f"{url}/search", json={"text": queries[k], "top_k": TOP_K}))
        if endpoint == "search-image":
            files = {"image": ("query.jpg", images[k], "image/jpeg")}
            return prepare(httpx.Request("POST", f"{url}/search", files=files, data={"top_k": str(TOP_K)}))
        return prepare(httpx.Request("POST", f"{url}/embed", json={"texts": [queries[k]]}))

    return lambda i: variant(i % variants)


def _server_timing(header: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        with contextlib.suppress(ValueError):
            out[name] = float(dur)
    return out


class RawClient:
    """HTTP/1.1 keep-alive over asyncio streams, at most ``max_connections`` open. Measured here it costs
    ~0.05 ms of client CPU a request where httpx's AsyncClient costs ~3 ms (and caps a 2-core run at
    ~200 QPS by itself), so it is the default; ``--client httpx`` keeps the library client."""

    def __init__(self, url: str, max_connections: int) -> None:
        parsed = httpx.URL(url)
        self._host, self._port = parsed.host, parsed.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(max_connections)

    async def send(self, prepared: Prepared) -> tuple[int, dict[str, str]]:
        async with self._slots:
            reader, writer = (
                self._idle.pop() if self._idle else await asyncio.open_connection(self._host, self._port)
            )
            try:
                writer.write(prepared.wire)
                status, headers = await _read_response(reader)
            except BaseException:
                writer.close()
                raise
            if headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self._idle.append((reader, writer))
            return status, headers

    async def aclose(self) -> None:
        for _, writer in self._idle:
            writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split(" ", 2)[1])
    headers = {}
    for line in head[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status, headers


class HttpxClient:
    def __init__(self, url: str, max_connections: int) -> None:
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client = httpx.AsyncClient(limits=limits, timeout=60)

    async def send(self, prepared: Prepared) -> tuple[int, dict[str, str]]:
        response = await self._client.send(prepared.request)
        await response.aread()
        return response.status_code, dict(response.headers)

    async def aclose(self) -> None:
        await self._client.aclose()


CLIENTS = {"raw": RawClient, "httpx": HttpxClient}


async def _send(client: RawClient | HttpxClient, prepared: Prepared, sent: float) -> Sample:
    try:
        status, headers = await asyncio.wait_for(client.send(prepared), 60)
        return Sample(sent, time.perf_counter(), status, _server_timing(headers.get("server-timing")))
    except (OSError, EOFError, ValueError, TimeoutError, asyncio.IncompleteReadError, httpx.HTTPError):
        return Sample(sent, time.perf_counter(), 0)


async def closed_loop(
    client_kind: str,
    url: str,
    make: Callable[[int], Prepared],
    concurrency: int,
    duration: float,
    warmup: float,
) -> tuple[list[Sample], float, float, int]:
    """``concurrency`` clients, each sending its next request when its last one is answered. Returns every
    sample, the measured window (after the warm-up) and how many requests were sent in all."""
    client = CLIENTS[client_kind](url, concurrency)
    begin = time.perf_counter()
    start, stop = begin + warmup, begin + warmup + duration
    samples: list[Sample] = []
    sent = 0

    async def worker(w: int) -> None:
        nonlocal sent
        i = w
        while (now := time.perf_counter()) < stop:
            samples.append(await _send(client, make(i), now))  # warm-up ones too: they may end in the window
            sent += 1
            i += concurrency

    try:
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    finally:
        await client.aclose()
    return samples, start, stop, sent


async def open_loop(
    client_kind: str,
    url: str,
    make: Callable[[int], Prepared],
    rate: float,
    duration: float,
    max_in_flight: int,
    seed: int,
) -> tuple[list[Sample], float, float]:
    """Poisson arrivals at ``rate``/s whatever the server does; latency counts from the scheduled arrival."""
    rng = random.Random(seed)
    client = CLIENTS[client_kind](url, max_in_flight)
    start = time.perf_counter() + 0.2
    arrivals, t = [], 0.0
    while (t := t + rng.expovariate(rate)) < duration:
        arrivals.append(start + t)
    samples: list[Sample] = []
    tasks: set[asyncio.Task[Sample]] = set()
    try:
        for i, at in enumerate(arrivals):
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= max_in_flight:
                samples.append(Sample(at, at, -1))
                continue
            task = asyncio.create_task(_send(client, make(i), at))
            tasks.add(task)
            task.add_done_callback(lambda t: (tasks.discard(t), samples.append(t.result())))
        while tasks:
            await asyncio.gather(*list(tasks))
    finally:
        await client.aclose()
    return samples, start, start + duration


def run_client(coro):  # type: ignore[no-untyped-def]
    """Run the client on uvloop when present: the client shares the cores with the server, so its own
    CPU per request is kept low (httpx still costs a few ms per request; see the cpu_client_ms column)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def summarise(samples: list[Sample], start: float, stop: float) -> dict[str, Any]:
    """QPS: answers completed inside the window; latency and errors: requests sent inside it."""
    completed = [s for s in samples if s.status == 200 and start <= s.done <= stop]
    samples = [s for s in samples if s.sent >= start]
    ok = [s for s in samples if s.status == 200]
    span = stop - start
    row: dict[str, Any] = {
        "requests": len(samples),
        "qps": len(completed) / span if span > 0 else float("nan"),
        "errors": sum(1 for s in samples if s.status != 200),
        "status_429": sum(1 for s in samples if s.status == 429),
        "not_sent": sum(1 for s in samples if s.status == -1),
        **percentiles_ms([s.done - s.sent for s in ok]),
    }
    names = sorted({n for s in ok for n in s.timing})
    row["server_timing_mean_ms"] = {n: float(np.mean([s.timing.get(n, 0.0) for s in ok])) for n in names}
    return row


# -- where the CPU goes --------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used by the server process, its Milvus server and this client between ``start`` and
    ``stop``: on a 2-core machine they share the cores, so CPU per request says who limits QPS."""

    def __init__(self, service: Service, data_dir: Path) -> None:
        pid_file = data_dir / "milvus" / "tuwen-milvus.pid"
        self.pids = {"server": service.pid}
        if pid_file.is_file():
            self.pids["milvus"] = int(pid_file.read_text())
        self._begin: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        out = {"client": time.process_time()}
        tick = os.sysconf("SC_CLK_TCK")
        for name, pid in self.pids.items():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                out[name] = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        return out

    def start(self) -> None:
        self._begin = self._now()

    def per_request_ms(self, requests: int) -> dict[str, float]:
        end = self._now()
        return {k: (end[k] - self._begin[k]) * 1000 / max(1, requests) for k in end if k in self._begin}


# -- profiling ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def profiled(service: Service, out: Path, enabled: bool):  # type: ignore[no-untyped-def]
    """py-spy record of the server process while the block runs: samples of the thread holding the GIL,
    i.e. where its Python CPU time goes (the GIL caps the app's Python work at one core)."""
    if not enabled:
        yield None
        return
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(service.pid),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "200",
            "--gil",  # only the thread holding the GIL: where the server's Python CPU goes
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield out
    finally:
        proc.send_signal(2)  # SIGINT: py-spy writes its output and exits
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode not in (0, -2) and not out.exists():
            print(f"py-spy failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")


# -- main ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir: Path = args.workdir or Path(tempfile.gettempdir()) / f"tuwen-bench-service-{args.arch}"
    bundle = ensure_bundle(workdir / "bundle", args.arch, int8=args.precision == "int8")
    data_dir = workdir / f"data-{args.items}"
    populated = populate(bundle, data_dir, args.items)
    queries = chinese_queries(max(200, args.bare_queries), seed=1)
    images = jpeg_images(32, size=args.image_size, seed=2)
    env = {"TUWEN_PRECISION": args.precision, **dict(kv.split("=", 1) for kv in args.set)}
    threads = int(env["TUWEN_INTRA_OP_THREADS"]) if "TUWEN_INTRA_OP_THREADS" in env else None
    result: dict[str, Any] = {
        "bench": "service_load",
        "arch": args.arch,
        "items": args.items,
        "populate": populated,
        "settings": env,
        "duration_s": args.duration,
        "client": args.client,
        "machine": machine(),
        "closed_loop": [],
        "open_loop": [],
    }
    with serve(bundle, data_dir, env=env) as service:
        print(f"serving {service.url} (pid {service.pid}); bare parts ...")
        result["bare"] = bare_parts(
            bundle, data_dir, queries[: args.bare_queries], threads, env["TUWEN_PRECISION"]
        )
        cpu = CpuMeter(service, data_dir)
        for endpoint in args.endpoints:
            make = request_maker(service.url, endpoint, queries, images)
            for c in args.concurrency:
                profile_out = RESULTS / f"profile-{args.arch}-{endpoint}-c{c}.txt"
                cpu.start()
                with profiled(service, profile_out, args.profile and c == 32 and endpoint == "search-text"):
                    samples, start, stop, sent = run_client(
                        closed_loop(args.client, service.url, make, c, args.duration, args.warmup)
                    )
                row = {"endpoint": endpoint, "concurrency": c, **summarise(samples, start, stop)}
                row |= {f"cpu_{k}_ms": v for k, v in cpu.per_request_ms(sent).items()}
                result["closed_loop"].append(row)
                print(
                    f"  {endpoint:13s} c={c:<3d} {row['qps']:7.1f} QPS  p50 {row['p50_ms']:6.1f} ms  "
                    f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}  server-timing means "
                    f"{ {k: round(v, 2) for k, v in row['server_timing_mean_ms'].items()} }"
                )
        base = next(
            (r for r in result["closed_loop"] if r["endpoint"] == "search-text" and r["concurrency"] == 32),
            None,
        )
        for fraction in args.rates:
            rate = fraction * base["qps"] if base else fraction
            make = request_maker(service.url, "search-text", queries, images)
            samples, start, stop = run_client(
                open_loop(args.client, service.url, make, rate, args.duration, 512, seed=3)
            )
            row = {
                "endpoint": "search-text",
                "rate": rate,
                "fraction_of_c32": fraction if base else None,
                **summarise(samples, start, stop),
            }
            result["open_loop"].append(row)
            print(
                f"  open loop {rate:7.1f}/s  -> {row['qps']:7.1f} QPS  p50 {row['p50_ms']:6.1f} ms  "
                f"p99 {row['p99_ms']:6.1f} ms  errors {row['errors']}"
            )
    result["targets"] = targets(result)
    return result


def targets(result: dict[str, Any]) -> dict[str, Any]:
    rows = {(r["endpoint"], r["concurrency"]): r for r in result["closed_loop"]}
    out: dict[str, Any] = {}
    c1, c32 = rows.get(("search-text", 1)), rows.get(("search-text", 32))
    bare = result.get("bare")
    if c1 and bare:
        parts = bare["text_tower"]["p50_ms"] + bare["milvus_search"]["p50_ms"]
        overhead = c1["p50_ms"] - parts
        out["service_overhead_ms"] = {
            "value": overhead,
            "search_p50_ms": c1["p50_ms"],
            "bare_p50_ms": parts,
            "target": "<= 5",
            "met": overhead <= 5,
        }
    if c1 and c32:
        ratio = c32["qps"] / c1["qps"]
        out["qps_ratio_c32_c1"] = {"value": ratio, "target": ">= 1.5", "met": ratio >= 1.5}
    return out


def report(result: dict[str, Any]) -> None:
    print(
        f"\n{result['arch']}, {result['items']} items, settings {result['settings'] or 'default'}, "
        f"load average {result['machine']['load_average']}"
    )
    print_table(
        result["closed_loop"],
        [*LATENCY_COLUMNS[:1], "concurrency", *LATENCY_COLUMNS[1:], *CPU_COLUMNS],
    )
    print("(cpu_*_ms: CPU milliseconds per request of the app process, its Milvus server and this client)")
    if result["open_loop"]:
        print()
        print_table(
            result["open_loop"],
            [*LATENCY_COLUMNS[:1], "rate", *LATENCY_COLUMNS[1:], "not_sent"],
        )
    bare = result["bare"]
    print(
        f"\nbare text tower p50 {bare['text_tower']['p50_ms']:.2f} ms, bare Milvus search p50 "
        f"{bare['milvus_search']['p50_ms']:.2f} ms"
    )
    for name, t in result["targets"].items():
        print(f"{name}: {t['value']:.2f} (target {t['target']}) {'met' if t['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="tiny-vit", help="model architecture of the random bundle (%(default)s)")
    p.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="tower precision the service loads (%(default)s; int8 exports the bundle with int8 graphs)",
    )
    p.add_argument("--items", type=int, default=100_000, help="vectors in Milvus (%(default)s)")
    p.add_argument("--workdir", type=Path, help="bundle and data, reused between runs (default: a temp dir)")
    p.add_argument("--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument(
        "--rates",
        type=float,
        nargs="*",
        default=[0.5, 0.9],
        help="open-loop /search arrival rates as fractions of the concurrency-32 QPS",
    )
    p.add_argument("--duration", type=float, default=8.0, help="measured seconds per level (%(default)s)")
    p.add_argument("--warmup", type=float, default=1.5, help="unmeasured seconds before each level")
    p.add_argument("--bare-queries", type=int, default=200, help="queries for the bare-part timings")
    p.add_argument("--image-size", type=int, default=224, help="side of the JPEG query images")
    p.add_argument("--set", action="append", default=[], metavar="TUWEN_X=V", help="service setting")
    p.add_argument("--client", choices=sorted(CLIENTS), default="raw", help="load generator's HTTP client")
    p.add_argument("--profile", action="store_true", help="py-spy the server under search-text c=32")
    p.add_argument("--out", type=Path, help="JSON path (default: bench/results/service_load-<time>.json)")
    args = p.parse_args(argv)
    result = run(args)
    report(result)
    save_json(f"service_load-{args.arch}", result, args.out)


def _json(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2)


def _read_json(path: Path) -> dict[str, Any]:
    import json

    return json.loads(path.read_text())


if __name__ == "__main__":
    main()
