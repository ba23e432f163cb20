"""`tuwen index` killed and resumed, and `tuwen load` by Milvus import tasks, on real Milvus 2.3.5 servers: the
embedded default (files in its local storage) and one keeping its data in S3 (moto's server standing in for
MinIO, as in the Compose stack and the Helm chart). A real local Ray (2 CPUs) and the tiny bundle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from tests.s3_server import object_keys, s3_server
from tests.service.api_server import tiny_bundle
from tests.service.corpora import RAY, index, make_cnclip, make_folder, shard_rows

pytest.importorskip("ray", reason="tuwen index needs the `index` extra (Ray Data)")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray", "clean_env")]

ROOT = Path(__file__).resolve().parents[2]


def test_killed_mid_run_resumes_without_losing_or_duplicating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "photos"
    images, _ = make_folder(source, 160)
    out = tmp_path / "out"
    command = [
        sys.executable,
        "-m",
        "service.cli",
        "index",
        str(source),
        "--bundle",
        str(tiny_bundle()),
        "--out",
        str(out),
        "--shard-size",
        "10",
        *RAY,
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180  # Ray starts slowly on a busy machine
        while not (out / "_done.json").exists() or len(json.loads((out / "_done.json").read_text())) < 3:
            assert process.poll() is None, "the indexer exited before it could be killed"
            assert time.monotonic() < deadline, "no shard finished in time"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the indexer and the local Ray it started
        process.wait()
    done = len(json.loads((out / "_done.json").read_text()))
    assert 3 <= done < 16, f"killed too late to test a resume ({done} of 16 shards done)"

    # The embedded local server (the default store): the partial index goes in by Milvus import tasks
    # (empty collections), the rest by upserts after the resumed run; the import's ids are not loaded twice.
    monkeypatch.delenv("TUWEN_MILVUS_URI", raising=False)
    monkeypatch.setenv("TUWEN_DATA_DIR", str(tmp_path / "data"))
    dim = json.loads((out / "plan.json").read_text())["dim"]
    rows_per_task = done * 10 // 2 + 1  # two import tasks (each costs seconds of server time)
    monkeypatch.setattr("service.indexing.load.IMPORT_FILE_BYTES", rows_per_task * (4 * dim + 256))
    monkeypatch.setattr("service.indexing.load.IMPORT_MIN_ROWS", 1)  # auto imports even these few
    assert main(["load", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["load_method"], summary["loaded"]) == ("import", done * 10)
    assert len(list((out / "_import").rglob("*.parquet"))) == 2
    assert index(source, out, "--shard-size", "10", "--load") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_shards"] == done and summary["read"] == summary["loaded"] == len(images)
    assert summary["load_method"] == "upsert"
    assert {"decode", "embed", "write", "index_wall", "load"} <= set(summary["seconds"])
    assert all(summary["seconds"][k] > 0 for k in ("decode", "embed", "index_wall", "load"))  # accounted

    from pymilvus import MilvusClient

    from service.store.local_server import LocalMilvusServer

    server = LocalMilvusServer(tmp_path / "data" / "milvus").start()
    milvus = MilvusClient(server.uri)
    try:
        (name,) = [n for n in milvus.list_collections() if n.endswith("_image")]
        milvus.load_collection(name)
        pks = [
            r["pk"]
            for r in milvus.query(
                name, filter='pk != ""', output_fields=["pk"], limit=10_000, consistency_level="Strong"
            )
        ]
    finally:
        milvus.close()
        server.stop()
    assert sorted(pks) == sorted(f"default/{k}" for k in images)  # each source id, exactly once
    assert len(shard_rows(out)) == len(images)


def test_bulk_import_from_s3_then_upserts_on_the_real_milvus_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The Compose/Helm set-up: a Milvus server keeping its data in an S3 bucket (moto's server standing
    in for MinIO), the import files uploaded next to it and read by Milvus's own S3 client."""
    from pymilvus import MilvusClient

    from tests.milvus_server import milvus_server

    source = tmp_path / "cn"
    images, texts = make_cnclip(source, 20)
    out = tmp_path / "out"
    assert index(source, out, "--split", "valid", "--shard-size", "8") == 0
    rows = shard_rows(out)
    expected = {"image": sorted(f"acme/{k}" for k in images), "text": sorted(f"acme/{k}" for k in texts)}

    def stored(uri: str) -> dict[str, list[str]]:
        milvus = MilvusClient(uri)
        try:
            found = {}
            for name in milvus.list_collections():
                got = milvus.query(
                    name,
                    filter='tenant == "acme"',
                    output_fields=["pk", "vector"],
                    limit=1000,
                    consistency_level="Strong",
                )
                kind = name.rsplit("_", 1)[1]
                for r in got:  # the exact vectors of the shards
                    assert (
                        np.float32(r["vector"]).tolist() == rows[(kind, r["pk"].split("/", 1)[1])]["vector"]
                    )
                found[kind] = sorted(r["pk"] for r in got)
            return found
        finally:
            milvus.close()

    with (
        s3_server("milvus-bucket") as endpoint,
        milvus_server(tmp_path / "milvus", endpoint, "milvus-bucket") as server,
    ):
        monkeypatch.setenv("TUWEN_MILVUS_URI", server.uri)
        monkeypatch.setenv("TUWEN_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("TUWEN_S3_ENDPOINT_URL", endpoint)
        # Milvus import tasks, reading the rewritten shards from its own bucket
        load = ["load", str(out), "--tenant", "acme", "--no-progress"]
        to_s3 = ["--method", "import", "--import-to", "s3://milvus-bucket/tuwen-import"]
        assert main([*load, *to_s3]) == 0
        files = object_keys(endpoint, "milvus-bucket", "tuwen-import/")
        # named by kind and run, never by the tenant (user input: a tenant may be "..")
        assert files and {f.split("/")[1] for f in files} == {"image", "text"}
        assert all(f.endswith(".parquet") for f in files)
        assert object_keys(endpoint, "milvus-bucket", "files/insert_log/")  # Milvus's data is there too
        assert json.loads((out / "summary.json").read_text())["loaded"] == len(rows)
        assert stored(server.uri) == expected
        assert main([*load, *to_s3]) == 2  # would duplicate: refused
        assert "would duplicate ids" in capsys.readouterr().err
        assert main(load) == 0  # auto: the collections are not empty, and the import recorded its shards
        assert f"loaded {len(rows)} by upsert" in capsys.readouterr().out
        for _ in range(2):  # upserts over imported rows, twice: still each id once
            next(out.glob("_loaded-*.json")).unlink()
            assert main(load) == 0
        assert stored(server.uri) == expected
