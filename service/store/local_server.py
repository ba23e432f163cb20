"""A real Milvus 2.3.5 standalone server, run as a child process on a local data directory.

The PyPI package ``milvus`` ("embedded Milvus") ships the server binary and a config template; this
module starts it on free loopback ports, waits until it answers ``/healthz``, and stops it again. It is
Tuwen's embedded default (see ``service.store.milvus`` for why) and the tests' way to get a server they
can stop and start.

One server per data directory: a pid file in the directory records the running server so that a server
orphaned by a hard-killed app is found and stopped before a new one opens the same files.

A server keeps its ports across restarts (recorded in the data directory). Its components find each other
through sessions in its etcd, which outlive an unclean stop by the session lease: a restart on new ports
left its proxy dialling the old addresses, which by then another server on the machine had taken (CI:
"collection not found", "index not found" and "unknown service" from the wrong server, for minutes).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from service.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

_PID_FILE = "tuwen-milvus.pid"
_PORTS_FILE = "tuwen-ports.json"  # under configs/
_SESSION_TTL_S = 10  # the server's session lease (Milvus' default: 30 s)
# Every port the server listens on, and where a free one is first looked for (the package's defaults;
# metrics serves /healthz; etcd's peer port moves off etcd's 2380 so that two servers can run).
PORT_DEFAULTS = {
    "proxy_port": 19530,
    "proxy_internal_port": 19529,
    "etcd_port": 2379,
    "etcd_peer_port": 23800,
    "root_coord_port": 53100,
    "query_coord_port": 19531,
    "query_node_port": 21123,
    "index_coord_port": 22930,
    "index_node_port": 21121,
    "data_coord_port": 13333,
    "data_node_port": 21124,
    "metrics_port": 9091,
}


class _ExitedWhileStarting(StoreUnavailable):
    pass


class LocalMilvusServer:
    """Start/stop one Milvus server process whose data lives under ``data_dir``.

    ``port`` is the gRPC port clients use (``uri``); ``ports`` fixes any of ``PORT_DEFAULTS``'s. A port not
    fixed is the one this data directory's server used last, or else a free one from its default upwards.
    Data survives ``stop()``/``start()``: the server replays its write-ahead log on start.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        port: int | None = None,
        ports: Mapping[str, int] | None = None,
        start_timeout_s: float = 90.0,
        stop_timeout_s: float = 8.0,
    ):
        unknown = set(ports or {}) - set(PORT_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown Milvus server ports {sorted(unknown)}; known: {sorted(PORT_DEFAULTS)}")
        self.data_dir = Path(data_dir).resolve()
        self.fixed_ports = dict(ports or {}) | ({"proxy_port": port} if port is not None else {})
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.port: int | None = None
        self.health_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def uri(self) -> str:
        if self.port is None:
            raise StoreUnavailable("the local Milvus server has not been started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> LocalMilvusServer:
        """Start the server (no-op when it runs) and block until it is healthy."""
        with self._lock:
            if self.running:
                return self
            self._stop_orphan()
            atexit.register(self.stop)
            for attempt in range(3):
                self._proc = self._launch()
                try:
                    self._wait_healthy()
                    return self
                except _ExitedWhileStarting:
                    # Two causes, both passing: ports are probed, then released for the server to bind
                    # (another process can take one in between: it moves on the next attempt); and a
                    # server that did not stop cleanly leaves its components' sessions in etcd until
                    # their lease ends, and a new proxy that dials one before its component is back
                    # panics ("unknown service milvus.proto.query.QueryCoord"). Waiting out the lease
                    # covers both.
                    if attempt == 2:
                        raise
                    time.sleep(_SESSION_TTL_S + 1)
            return self

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then kill: Milvus 2.3 may take 20 s to leave, and a kill is safe
        because every acknowledged write is already in its write-ahead log."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / _PID_FILE).unlink()

    def _launch(self) -> subprocess.Popen[bytes]:
        # Imported here: the package decompresses ~200 MB of binaries on first use, never at import.
        from milvus import MilvusServerConfig, _initialize_data_files

        config = MilvusServerConfig(data_dir=str(self.data_dir))
        config.resolve()  # makes the data directories and writes configs/milvus.yaml; ports follow
        ports = self._choose_ports()
        for key, port in ports.items():
            if key in config.configurable_items:
                config.configurable_items[key][1] = port
        config.write_config()
        self._configure_etcd(config, ports["etcd_peer_port"])
        _initialize_data_files(str(self.data_dir))
        self.port, self.health_port = ports["proxy_port"], ports["metrics_port"]
        binary = self.data_dir / "bin" / "milvus"
        env = os.environ | {
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.health_port),
            "MILVUS_RUN_DIR": str(self.data_dir / "run"),
            "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        }
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "milvus-stdout.log", "ab") as out, open(logs / "milvus-stderr.log", "ab") as err:
            proc = subprocess.Popen(
                [str(binary), "run", "standalone"],
                cwd=self.data_dir,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,  # a Ctrl+C meant for the app must not kill the server mid-write
            )
        (self.data_dir / _PID_FILE).write_text(str(proc.pid))
        return proc

    def _choose_ports(self) -> dict[str, int]:
        """Fixed ports, else last time's (while free), else free ones; recorded for the next start.

        Free means bindable with SO_REUSEADDR, as the server's listeners bind: a port in TIME_WAIT after a
        stop is free (the package's own probe binds without it and would move every port on a restart).
        """
        record = self.data_dir / "configs" / _PORTS_FILE
        try:
            last = {k: int(v) for k, v in json.loads(record.read_text()).items() if k in PORT_DEFAULTS}
        except (FileNotFoundError, ValueError, AttributeError):
            last = {}
        legacy = self.data_dir / "configs" / "tuwen-etcd-peer-port"  # before the record: etcd's peer only
        if "etcd_peer_port" not in last and legacy.exists():
            last["etcd_peer_port"] = int(legacy.read_text())
        for key, port in self.fixed_ports.items():
            if not port_free(port):
                raise StoreUnavailable(
                    f"port {port} ({key} of the local Milvus server) is in use by another process; stop "
                    f"that process or choose another port"
                )
        ports = dict(self.fixed_ports)
        moved = []
        for key, default in PORT_DEFAULTS.items():
            if key in ports:
                continue
            if key in last and last[key] not in ports.values() and port_free(last[key]):
                ports[key] = last[key]
                continue
            if key in last:
                moved.append(f"{key} {last[key]}")
            port = default
            while port in ports.values() or not port_free(port):
                port += 1
            ports[key] = port
        if moved:
            log.warning("the local Milvus server's ports were taken, so they move: %s", ", ".join(moved))
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(ports, indent=1))
        return ports

    def _configure_etcd(self, config: Any, peer: int) -> None:
        """Give the embedded etcd its own peer port: the package leaves it at 2380, so a second server on
        the machine (tests beside a running app) would fail to start."""
        client = int(config.get("etcd_port"))
        etcd_file = self.data_dir / "configs" / "etcd.yaml"
        etcd_file.write_text(
            "name: default\n"
            f"listen-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
            f"initial-cluster: default=http://127.0.0.1:{peer}\n"
            f"listen-client-urls: http://127.0.0.1:{client}\n"
            f"advertise-client-urls: http://127.0.0.1:{client}\n"
        )
        milvus_yaml = self.data_dir / "configs" / "milvus.yaml"
        text = milvus_yaml.read_text().replace("\netcd:\n", f"\netcd:\n  config:\n    path: {etcd_file}\n", 1)
        # A restart after a crash waits out the dead server's session lease (30 s by default), and a
        # graceful stop may take up to 30 minutes by default: both bounded for a single local server.
        text = text.replace("    ttl: 30 #", f"    ttl: {_SESSION_TTL_S} #", 1)
        text = text.replace("gracefulStopTimeout: 1800 #", "gracefulStopTimeout: 5 #", 1)
        milvus_yaml.write_text(self._edit_config(text))

    def _edit_config(self, milvus_yaml: str) -> str:
        """The final say on the server's ``milvus.yaml`` (its text): a subclass may change more, e.g. the
        tests' server that keeps its data in an S3 bucket (``tests/milvus_server.py``)."""
        return milvus_yaml

    def _wait_healthy(self) -> None:
        url = f"http://127.0.0.1:{self.health_port}/healthz"
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise _ExitedWhileStarting(
                    f"the local Milvus server exited while starting; see {self.data_dir / 'logs'}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=1) as resp,
            ):
                # /healthz can answer OK a moment before the proxy serves gRPC (a first call then fails
                # with "unknown service milvus.proto.milvus.MilvusService"): healthy means both.
                if b"OK" in resp.read() and self._answers_grpc():
                    if _listens_on(self._proc.pid, self.port or 0) is False:
                        # Another server took the port between our check and our bind: never let
                        # clients talk to it. A next try finds the port taken and says so.
                        self._proc.kill()
                        self._proc.wait()
                        raise _ExitedWhileStarting(f"another process answers on port {self.port}")
                    return
            time.sleep(0.2)
        raise StoreUnavailable(
            f"the local Milvus server did not become healthy in {self.start_timeout_s:.0f} s; "
            f"see {self.data_dir / 'logs'}"
        )

    def _answers_grpc(self) -> bool:
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(uri=self.uri, timeout=2)
            try:
                client.list_collections(timeout=2)
            finally:
                client.close()
        except Exception:
            return False
        return True

    def _stop_orphan(self) -> None:
        """Stop a server left running on this data directory by a process that died without stopping it."""
        pid_file = self.data_dir / _PID_FILE
        try:
            pid = int(pid_file.read_text())
        except (FileNotFoundError, ValueError):
            return
        try:
            same_dir = Path(f"/proc/{pid}/cwd").resolve() == self.data_dir
        except OSError:
            same_dir = False
        if same_dir:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            for _ in range(200):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def port_free(port: int) -> bool:
    """Whether a listener could bind ``port`` on loopback now (with SO_REUSEADDR, as Milvus's do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _listens_on(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds the listening TCP socket on ``port``; None where /proc cannot tell."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    inodes.add(f"socket:[{fields[9]}]")
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                return True
    return False
