"""Kit for issue 6's real-program acceptance tests (tests/system/test_apps_*.py): Debian's nginx,
`python3 -m http.server` and curl on this host, reached from (or reaching) the remote host of a
test bed, each run in one of two modes:

* `kernel`: the program as it is, no mstack-run, no mstackd — the scenario's own checks must
  pass here, which proves the test works;
* `shim`: the same program under `mstack-run --policy FILE --app NAME`, with an mstackd attached
  to the test bed's root-side link, and the proof that UTCP carried the listed sockets: the
  kernel (`ss`) holds no established connection of the remote host on them, and the switch
  counters (`mstackctl stats --json`) rose.

While the shim has no UTCP it says so on stderr ("this shim has no UTCP yet"); an under-shim
test then runs its scenario anyway (fork, daemon, setuid workers, reload and the binary upgrade
still go through the shim) and skips at the proof with that reason. Once the shim carries UTCP
the message is gone and the same code asserts the proof."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from mstack_testkit import Mstackd
from testbed.netns import RemoteHost, stop_process, wait_line
from testbed.web import BIN, CURL, HOLD, NGINX, TEMP_KINDS, make_docroot, sha256_file

REPO = Path(__file__).resolve().parents[1]
PY3 = Path("/usr/bin/python3")  # Debian's interpreter for `python3 -m http.server`
FULL = os.environ.get("MSTACK_FULL") == "1"
NO_UTCP = "this shim has no UTCP yet"  # the shim's words for a listed socket left on the kernel
WEB_PORT = 8080
UPSTREAM_PORT = 8000
GATE_PORT = 8001
SIZES = {
    "0.bin": 0,
    "1.bin": 1,
    "1k.bin": 1024,
    "64k.bin": 64 << 10,
    "1m.bin": 1 << 20,
    "10m.bin": 10 << 20,
}
MODES = ["kernel", "shim"]


def need(*programs: Path) -> None:
    for p in programs:
        if not p.exists():
            pytest.skip(f"{p} is not installed (Debian package of the program under test)")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A directory every user can traverse (nginx's workers run as www-data; pytest's tmp_path
    is 0700), removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="mst-apps-"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- how a program is started ---------------------------------------------------------------------


@dataclass
class Launch:
    """Mode `kernel` runs a command as it is; mode `shim` runs it under mstack-run with this
    test's policy file and the mstackd of the test bed."""

    mode: str
    host: RemoteHost
    dir: Path
    daemon: Mstackd | None = None
    policy: Path | None = None
    verbose: bool = False  # mstack-run --verbose: the shim reports its policy and decisions

    @property
    def shim(self) -> bool:
        return self.mode == "shim"

    def write_policy(self, apps: dict[str, dict[str, list[str]]]) -> None:
        """{app: {"exe": [...], "listen": [...], "connect": [...]}} as a policy file, checked
        with `mstackctl policy check`. A no-op in kernel mode."""
        if not self.shim:
            return
        lines = []
        for app, entry in apps.items():
            lines.append(f"[apps.{app}]")
            for key, values in entry.items():
                lines.append(f"{key} = {json.dumps(values)}")
            lines.append("")
        self.policy = self.dir / "policy.toml"
        self.policy.write_text("\n".join(lines))
        cp = subprocess.run(
            [str(BIN / "mstackctl"), "policy", "check", str(self.policy)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cp.returncode == 0, f"{self.policy.read_text()}\n{cp.stdout}{cp.stderr}"

    def argv(self, app: str, cmd: Sequence[str | Path]) -> list[str]:
        cmd = [str(c) for c in cmd]
        if not self.shim:
            return cmd
        assert self.policy is not None, "write_policy() first"
        opts = ["--verbose"] if self.verbose else []
        return [str(BIN / "mstack-run"), "--policy", str(self.policy), "--app", app, *opts, "--",
                *cmd]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.daemon is not None:
            env["MSTACK_RUN_DIR"] = str(self.daemon.run_dir)
        return env

    def stats(self) -> dict[str, Any]:
        assert self.daemon is not None
        cp = self.daemon.ctl("stats", "--json")
        assert cp.returncode == 0, cp.stderr
        return dict(json.loads(cp.stdout))


@pytest.fixture(params=MODES)
def launch(request: pytest.FixtureRequest, remote_host: RemoteHost) -> Iterator[Launch]:
    """The mode of a scenario: `kernel` (no shim, no daemon) or `shim` (mstack-run, an mstackd
    attached to the remote host's root-side link)."""
    daemon = request.getfixturevalue("mstackd") if request.param == "shim" else None
    with workdir() as d:
        yield Launch(request.param, remote_host, d, daemon)


# -- the proof that UTCP carried it ---------------------------------------------------------------


@dataclass
class Watch:
    """Established kernel connections with the remote host on a listed or unlisted endpoint:
    `local_port` for connections a listener here accepted, `remote_port` for connections this
    host opened. `utcp` says where they belong: True — never in the kernel's table; False — on
    the kernel (an unlisted socket, or kernel mode), and the watch must see them there (which
    also proves that the watch sees what it looks for)."""

    label: str
    remote_ip: str
    utcp: bool
    local_port: int | None = None
    remote_port: int | None = None

    def ss(self) -> list[str]:
        dst = self.remote_ip + (f":{self.remote_port}" if self.remote_port else "")
        argv = ["ss", "-tnH", "state", "established", "dst", dst]
        if self.local_port:
            argv += ["sport", "=", f":{self.local_port}"]
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True)
        return [" ".join(line.split()) for line in cp.stdout.splitlines() if line.strip()]

    def said(self, line: str) -> bool:
        """Whether a line of the shim's is about this watch's sockets ("listener A:P is
        listed ..." or "connection to A:P is listed ...")."""
        if self.local_port is not None:
            return "listener " in line and f":{self.local_port} is listed" in line
        port = f":{self.remote_port} is listed" if self.remote_port else ":"
        return f"connection to {self.remote_ip}{port}" in line

    def matches(self, conn: dict[str, Any]) -> bool:
        """Whether an entry of `mstackctl conns --json` is one of this watch's connections."""
        local, remote = str(conn.get("local", "")), str(conn.get("remote", ""))
        return (
            conn.get("state") == "ESTABLISHED"
            and remote.rpartition(":")[0] == self.remote_ip
            and (self.local_port is None or local.endswith(f":{self.local_port}"))
            and (self.remote_port is None or remote.endswith(f":{self.remote_port}"))
        )


class Proof:
    """Samples the kernel's connection table (`ss`, 4 times a second, plus on demand while a
    connection is known to be open) for each watch during a scenario, and reads the switch
    counters before and after. verify() at the end asserts where each watched connection
    lived, or skips the UTCP part with the shim's own words when it has no UTCP yet."""

    PERIOD_S = 0.25
    CONNS_WAIT_S = 5.0
    MAX_SAMPLES = 4 * 900  # bounded even if a scenario forgets to stop it

    def __init__(self, launch: Launch, watches: list[Watch], logs: Sequence[Path]) -> None:
        self.launch = launch
        self.watches = watches
        self.logs = list(logs)
        self.seen: dict[str, set[str]] = {w.label: set() for w in watches}
        self.conns: dict[str, list[dict[str, Any]]] = {w.label: [] for w in watches}
        self.on_demand = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.before: dict[str, Any] = {}
        self.after: dict[str, Any] = {}

    def __enter__(self) -> Proof:
        if self.launch.shim:
            self.before = self.launch.stats()
        self._thread = threading.Thread(target=self._run, name="proof-ss", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        if self.launch.shim:
            self.after = self.launch.stats()

    def _run(self) -> None:
        for _ in range(self.MAX_SAMPLES):
            if self._stop.wait(self.PERIOD_S):
                return
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.sample()

    def sample(self) -> dict[str, list[str]]:
        """One look at the kernel's table now (call it while a connection is held open)."""
        out = {w.label: w.ss() for w in self.watches}
        with self._lock:
            for label, lines in out.items():
                self.seen[label].update(lines)
        return out

    def sample_held(self) -> None:
        """Call while a connection of every watch is open: ss must (kernel) or must not
        (UTCP) see it, and for UTCP `mstackctl conns` must show it (stacks publish their
        connections periodically: polled for up to CONNS_WAIT_S)."""
        self.on_demand += 1
        self.sample()
        if not self.launch.shim:
            return
        assert self.launch.daemon is not None
        msgs = self.messages()
        deadline = time.monotonic() + self.CONNS_WAIT_S
        for w in (w for w in self.watches if w.utcp and not any(w.said(m) for m in msgs)):
            for _ in range(int(self.CONNS_WAIT_S * 10)):
                cp = self.launch.daemon.ctl("conns", "--json")
                found = [c for c in json.loads(cp.stdout or "[]") if w.matches(c)]
                if found or time.monotonic() > deadline:
                    self.conns[w.label] += found
                    break
                time.sleep(0.1)

    def messages(self, *marks: str) -> list[str]:
        """Lines of the programs' stderr and logs with one of `marks` (default: the shim's
        words for a listed socket that stays on the kernel)."""
        marks = marks or (NO_UTCP,)
        out: list[str] = []
        for p in self.logs:
            with contextlib.suppress(OSError):
                text = p.read_text(errors="replace")
                out += [ln for ln in text.splitlines() if any(m in ln for m in marks)]
        return out

    def delta(self, side: str, key: str) -> int:
        return int(self.after.get(side, {}).get(key, 0)) - int(
            self.before.get(side, {}).get(key, 0)
        )

    def verify(self) -> None:
        """Call after the context has exited (the counters are read on exit)."""
        assert self.on_demand > 0, "the scenario never sampled ss while a connection was held"
        for w in self.watches:
            if not w.utcp:  # it must be on the kernel, and the watch must have seen it
                assert self.seen[w.label], f"{w.label}: no kernel connection ever seen by ss"
        msgs = self.messages()
        # A watch whose sockets the shim says it left on the kernel is skipped, with its words;
        # every other UTCP watch is held to the proof (the shim may carry listeners first).
        utcp = [w for w in self.watches if w.utcp and not any(w.said(m) for m in msgs)]
        waiting = [w for w in self.watches if w.utcp and w not in utcp]
        if utcp:
            self._assert_utcp(utcp)
        if waiting:
            said = [m.strip() for m in msgs if any(w.said(m) for w in waiting)]
            held = {w.label: len(self.seen[w.label]) for w in waiting}
            pytest.skip(
                f"UTCP is not in the shim yet — {said[0]!r} ({len(said)} such line(s)); the "
                f"scenario passed on the kernel under mstack-run: kernel connections seen "
                f"{held}, switch steered {self.steered()} frames to ports, sent "
                f"{self.delta('egress', 'sent')}"
            )

    def steered(self) -> int:
        return sum(
            self.delta("ingress", k) for k in ("to_port_new", "to_port_flow", "to_port_conn")
        )

    def _assert_utcp(self, utcp: list[Watch]) -> None:
        steered, sent = self.steered(), self.delta("egress", "sent")
        problems = []
        for w in utcp:
            if not self.conns[w.label]:
                problems.append(f"{w.label}: mstackctl conns showed no connection")
            if self.seen[w.label]:
                problems.append(f"{w.label} is listed for UTCP but the kernel held established "
                                f"connections: {sorted(self.seen[w.label])[:5]}")  # fmt: skip
        if steered <= 0 or sent <= 0:
            problems.append(f"the switch counters did not rise: steered {steered}, sent {sent}")
        if any(w.local_port for w in utcp) and self.delta("ingress", "to_port_new") <= 0:
            problems.append("no new flow (SYN) went to a port: ingress to_port_new did not rise")
        said = self.messages("libmstack", "mstack-run")[-20:]
        assert not problems, (
            "not carried by UTCP:\n  " + "\n  ".join(problems) + "\nwhat the shim and "
            "mstack-run said:\n  " + "\n  ".join(said or ["nothing"])
        )


def by_size(files: dict[str, str]) -> list[str]:
    """A docroot's paths, smallest file first ("/0.bin", "/1.bin", "/1k.bin", ...)."""
    return sorted(files, key=lambda p: (len(p), p))


# -- held connections (what makes an ss sample deterministic) -------------------------------------


@contextlib.contextmanager
def held_connection(rh: RemoteHost, ip: str, port: int, path: str) -> Iterator[None]:
    """A keep-alive connection from the remote host, open for the duration of the block."""
    p = rh.python_popen(
        HOLD, ip, str(port), path, ready="open", ready_timeout=30, stdin=subprocess.PIPE
    )
    try:
        yield
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
        wait_line(p, "done", 30)
        p.wait(timeout=30)
        assert p.returncode == 0
    finally:
        stop_process(p)


# -- remote clients -------------------------------------------------------------------------------


@dataclass
class Fetch:
    path: str
    code: int
    connects: int
    size: int
    sha: str


CURL_MAX_S = 30  # per transfer (10 MB over a veth takes well under a second)


def curl_argv(base: str, paths: Sequence[str], outdir: Path, keepalive: bool) -> list[str]:
    """One curl for several URLs: on one connection (keep-alive) or one each (Connection:
    close). `-w` reports each transfer's status, new connections and size."""
    argv = [
        str(CURL),
        "-sS",
        "--fail-early",  # a transfer that fails (or times out) ends the run
        "--max-time",
        str(CURL_MAX_S),
        "-w",
        "%{http_code} %{num_connects} %{size_download}\\n",
    ]
    if not keepalive:
        argv += ["-H", "Connection: close"]
    for i, p in enumerate(paths):
        argv += [f"{base}{p}", "-o", str(outdir / f"{i}.out")]
    return argv


def parse_curl(out: str, paths: Sequence[str], outdir: Path) -> list[Fetch]:
    lines = out.split()
    assert len(lines) == 3 * len(paths), out
    res = []
    for i, p in enumerate(paths):
        code, conns, size = lines[3 * i : 3 * i + 3]
        f = outdir / f"{i}.out"
        res.append(Fetch(p, int(code), int(conns), int(size), sha256_file(f)))
        f.unlink()
    return res


def remote_curl(
    rh: RemoteHost, base: str, paths: Sequence[str], outdir: Path, keepalive: bool
) -> list[Fetch]:
    outdir.mkdir(exist_ok=True)
    cp = rh.run(curl_argv(base, paths, outdir, keepalive), timeout=CURL_MAX_S * len(paths) + 30,
                check=False)  # fmt: skip
    assert cp.returncode == 0, f"curl exited {cp.returncode}: {cp.stderr}"
    return parse_curl(cp.stdout, paths, outdir)


def check_fetches(
    got: list[Fetch], want: dict[str, str], keepalive: bool, prefix: str = ""
) -> None:
    for f in got:
        assert f.code == 200, f
        assert f.sha == want[f.path.removeprefix(prefix)], f"{f.path}: body differs ({f.size} B)"
    conns = [f.connects for f in got]
    if keepalive:
        assert sum(conns) == 1, f"keep-alive: expected one connection for all, got {conns}"
    else:
        assert conns == [1] * len(got), f"Connection: close: expected one each, got {conns}"


# Remote load: threads that GET the files until a stop file appears or the time is up; each body
# checked. "close" threads open a connection per request; "keepalive" threads reuse one and, as
# HTTP clients do (RFC 9110 9.2.2), retry once on a fresh connection an idempotent request that
# met a persistent connection the server had closed before answering — counted as "retried";
# a failure on a fresh connection, a bad status or a bad body is a failure.
LOAD = r"""
import hashlib, http.client, json, os, random, sys, threading, time
host, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
kinds, want, stop_path = sys.argv[4].split(","), json.loads(sys.argv[5]), sys.argv[6]
paths = sorted(want)
deadline = time.monotonic() + secs
lock = threading.Lock()
res = {"ok": 0, "failed": 0, "retried": 0, "errors": [], "pids": {}}

def note(key, err=None):
    with lock:
        res[key] += 1
        if err and len(res["errors"]) < 20:
            res["errors"].append(err)

def running():
    return time.monotonic() < deadline and not os.path.exists(stop_path)

def get(conn, path):
    conn.request("GET", path, headers={"Connection": "keep-alive" if conn.keep else "close"})
    r = conn.getresponse()
    body = r.read()
    return r.status, body, r.getheader("X-Worker-Pid")

def fresh(keep):
    c = http.client.HTTPConnection(host, port, timeout=20)
    c.keep = keep
    return c

def check(path, status, body, pid):
    if status != 200 or hashlib.sha256(body).hexdigest() != want[path]:
        note("failed", f"{path}: status {status}, {len(body)} B")
    else:
        note("ok")
        if pid:
            with lock:
                res["pids"][pid] = res["pids"].get(pid, 0) + 1

def worker(kind, seed):
    rng = random.Random(seed)
    conn, used = None, False
    for i in range(10**6):
        if not running():
            break
        path = rng.choice(paths)
        if conn is None:
            conn, used = fresh(kind == "keepalive"), False
        try:
            status, body, pid = get(conn, path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
            conn.close()
            conn = None
            if not used:
                note("failed", f"{path}: {e!r} on a fresh connection")
                continue
            note("retried")
            conn = fresh(kind == "keepalive")
            try:
                status, body, pid = get(conn, path)
            except Exception as e2:
                note("failed", f"{path}: {e2!r} on the retry")
                conn.close()
                conn = None
                continue
        except Exception as e:
            note("failed", f"{path}: {e!r}")
            conn.close()
            conn = None
            continue
        check(path, status, body, pid)
        used = True
        if kind != "keepalive":
            conn.close()
            conn = None
    if conn is not None:
        conn.close()

threads = [threading.Thread(target=worker, args=(k, i)) for i, k in enumerate(kinds)]
for t in threads:
    t.start()
print("started", flush=True)
for t in threads:
    t.join(secs + 60)
print(json.dumps(res), flush=True)
"""


class Load:
    """LOAD running in the remote namespace until stop() (or its time limit)."""

    def __init__(
        self,
        rh: RemoteHost,
        ip: str,
        port: int,
        want: dict[str, str],
        d: Path,
        kinds: str = "close,close,keepalive,keepalive",
        secs: float = 120,
    ) -> None:
        self.stop_path = d / f"load-stop-{id(self)}"
        self.proc = rh.python_popen(
            LOAD,
            ip,
            str(port),
            str(secs),
            kinds,
            json.dumps(want),
            str(self.stop_path),
            ready="started",
        )
        self.secs = secs

    def stop(self) -> dict[str, Any]:
        self.stop_path.touch()
        try:
            out, err = self.proc.communicate(timeout=self.secs + 90)
        finally:
            stop_process(self.proc)
        assert self.proc.returncode == 0, err
        return dict(json.loads(out.strip().splitlines()[-1]))


# -- nginx ---------------------------------------------------------------------------------------


@dataclass
class Nginx:
    """Debian's nginx as close to its stock configuration (/etc/nginx/nginx.conf) as a test
    allows: user www-data, worker_processes auto, master process, daemon on, sendfile and
    tcp_nopush on, mime types, gzip; pid, logs and temp paths under `prefix`; one server on
    the test-bed address whose responses name the worker (X-Worker-Pid, and $pid in the access
    log); an optional /up/ location proxied to `upstream` (with upstream keep-alive, so an idle
    upstream connection stays open for ss to see)."""

    launch: Launch
    prefix: Path
    ip: str
    port: int = WEB_PORT
    workers: str = "auto"
    sendfile: bool = True
    upstream: str | None = None
    files: dict[str, str] = field(default_factory=dict)  # the docroot: {"/name": sha256}
    masters: list[psutil.Process] = field(default_factory=list)
    known: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    @property
    def stderr_log(self) -> Path:
        return self.prefix / "stderr.log"

    @property
    def logs(self) -> list[Path]:
        return [self.stderr_log, self.error_log]

    @property
    def nworkers(self) -> int:
        if self.workers == "auto":  # nginx counts the CPUs it may run on
            return len(os.sched_getaffinity(0))
        return int(self.workers)

    def url(self, path: str = "/") -> str:
        return f"http://{self.ip}:{self.port}{path}"

    def conf_text(self) -> str:
        p = self.prefix
        temps = "\n".join(f"    {k}_temp_path {p}/tmp/{k};" for k in TEMP_KINDS)
        up, loc = "", ""
        if self.upstream:
            up = f"    upstream remote {{ server {self.upstream}; keepalive 8; }}\n"
            loc = (
                "        location /up/ {\n"
                "            proxy_pass http://remote/;\n"
                "            proxy_http_version 1.1;\n"
                '            proxy_set_header Connection "";\n'
                "        }\n"
            )
        return f"""user www-data;
worker_processes {self.workers};
pid {p}/nginx.pid;
error_log {p}/error.log;
include /etc/nginx/modules-enabled/*.conf;

events {{
    worker_connections 768;
}}

http {{
    sendfile {"on" if self.sendfile else "off"};
    tcp_nopush on;
    types_hash_max_size 2048;
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    log_format apps '$remote_addr $pid $connection $connection_requests "$request" $status '
                    '$body_bytes_sent';
    access_log {p}/access.log apps;
    gzip on;
{temps}
{up}
    server {{
        listen {self.ip}:{self.port};
        root {p}/www;
        add_header X-Worker-Pid $pid always;
{loc}    }}
}}
"""

    def cmd(self, *extra: str) -> list[str]:
        return [
            str(NGINX),
            "-p",
            str(self.prefix),
            "-c",
            str(self.conf),
            "-e",
            str(self.error_log),
            *extra,
        ]

    def start(self) -> None:
        """nginx daemonizes: the command returns once the master is up; then wait for the
        pid file, the workers and the kernel's (shadow) listener."""
        (self.prefix / "tmp").mkdir(exist_ok=True)
        os.chown(self.prefix / "tmp", 33, 33)  # www-data: proxy buffers to files in there
        self.conf.write_text(self.conf_text())
        with open(self.stderr_log, "ab") as err:
            cp = subprocess.run(
                self.launch.argv("web", self.cmd()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.launch.env(),
                timeout=60,
            )
        assert cp.returncode == 0, f"nginx exited {cp.returncode}:\n{self.diagnostics()}"
        master = self.wait_master(self.pid_file)
        self.masters.append(master)
        self.wait_workers(master, set())
        self.wait_listening()
        self.wait_group()

    def wait_group(self, timeout: float = 20) -> None:
        """Under the shim: until every worker waits in the listener's listen group. Until a
        process waits on a listener, new flows go to the kernel's shadow listener (design.md
        section 4a), and a keep-alive load started earlier would keep those kernel connections
        for the whole test."""
        if not self.launch.shim or self.launch.daemon is None:
            return
        deadline = time.monotonic() + timeout
        members: list[Any] = []
        while time.monotonic() < deadline:
            cp = self.launch.daemon.ctl("bindings", "--json")
            if cp.returncode == 0:
                members = [
                    b.get("members", [])
                    for b in json.loads(cp.stdout)
                    if b.get("kind") == "listen" and b.get("port") == self.port
                ]
                if members and len(members[0]) >= self.nworkers:
                    return
            time.sleep(0.05)
        raise AssertionError(
            f"nginx's workers did not join the listen group of port {self.port} in {timeout} s "
            f"(members {members})\n{self.diagnostics()}"
        )

    def diagnostics(self) -> str:
        out = []
        for p in (self.stderr_log, self.error_log):
            with contextlib.suppress(OSError):
                out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}")
        if self.launch.daemon is not None:
            out.append(f"--- mstackd\n{self.launch.daemon.log()[-4000:]}")
        return "\n".join(out)

    def wait_master(self, pid_file: Path, timeout: float = 20) -> psutil.Process:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, psutil.Error):
                proc = psutil.Process(int(pid_file.read_text()))
                if "master process" in " ".join(proc.cmdline()):
                    self.known[proc.pid] = proc
                    return proc
            time.sleep(0.05)
        raise AssertionError(
            f"no nginx master in {pid_file} after {timeout} s\n{self.diagnostics()}"
        )

    def worker_procs(self, master: psutil.Process, draining: bool = False) -> list[psutil.Process]:
        """The master's workers (those shutting down too, with `draining`)."""
        out = []
        with contextlib.suppress(psutil.Error):
            for c in master.children():
                with contextlib.suppress(psutil.Error):
                    line = " ".join(c.cmdline())
                    if "worker process" in line and (draining or "shutting down" not in line):
                        self.known[c.pid] = c
                        out.append(c)
        return out

    def wait_workers(
        self, master: psutil.Process, old: set[int], timeout: float = 20
    ) -> list[psutil.Process]:
        """Until `master` has its full set of workers, none of them in `old`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ws = [w for w in self.worker_procs(master) if w.pid not in old]
            if len(ws) >= self.nworkers:
                return ws
            time.sleep(0.05)
        raise AssertionError(
            f"nginx {master.pid}: {self.nworkers} new workers not up in "
            f"{timeout} s\n{self.diagnostics()}"
        )

    def wait_listening(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cp = subprocess.run(
                ["ss", "-tlnH", "src", f"{self.ip}:{self.port}"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if cp.stdout.strip():
                return
            time.sleep(0.05)
        raise AssertionError(f"nothing listens on {self.ip}:{self.port}\n{self.diagnostics()}")

    @property
    def master(self) -> psutil.Process:
        return self.masters[-1]

    def reload(self) -> None:
        """`nginx -s reload` (through mstack-run in shim mode, as systemd's ExecReload would),
        then until the master runs a new set of workers."""
        old = {w.pid for w in self.worker_procs(self.master, draining=True)}
        with open(self.stderr_log, "ab") as err:
            cp = subprocess.run(
                self.launch.argv("web", self.cmd("-s", "reload")),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=self.launch.env(),
                timeout=60,
            )
        assert cp.returncode == 0, self.diagnostics()
        self.wait_workers(self.master, old)

    def upgrade(self, between: Any = None) -> psutil.Process:
        """The binary upgrade of nginx's docs: USR2 (the master re-execs itself, environment
        stripped to TZ, the listeners inherited), WINCH (the old workers finish and go), QUIT
        (the old master goes). Returns the new master. `between()` runs after each step."""
        old = self.master
        old_workers = {w.pid for w in self.worker_procs(old, draining=True)}
        old.send_signal(signal.SIGUSR2)
        oldbin = self.pid_file.with_name(self.pid_file.name + ".oldbin")
        deadline = time.monotonic() + 20
        while not oldbin.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert oldbin.exists(), f"no {oldbin} after USR2\n{self.diagnostics()}"
        new = self.wait_master(self.pid_file)
        assert new.pid != old.pid and new.ppid() == old.pid, (new, old)
        self.masters.append(new)
        self.wait_workers(new, old_workers)
        if between:
            between()
        old.send_signal(signal.SIGWINCH)
        deadline = time.monotonic() + 30
        while self.worker_procs(old, draining=True) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not self.worker_procs(old, draining=True), "old workers still there after WINCH"
        if between:
            between()
        old.send_signal(signal.SIGQUIT)
        _, alive = psutil.wait_procs([old], timeout=30)
        assert not alive, "old master still there after QUIT"
        self.masters.remove(old)
        return new

    def stop(self) -> None:
        """QUIT (graceful) every master, wait for masters and workers; SIGKILL what is left
        after 15 s (a failure). Processes are killed by the psutil handle taken when they were
        seen, so a reused pid is never hit."""
        for m in self.masters:
            self.worker_procs(m, draining=True)
        for proc in self.prefix_masters():
            self.known.setdefault(proc.pid, proc)
            self.worker_procs(proc, draining=True)
        procs = [p for p in self.known.values() if _alive(p)]
        for m in procs:
            if "master process" in " ".join(_cmdline(m)):
                with contextlib.suppress(psutil.Error):
                    m.send_signal(signal.SIGQUIT)
        _, alive = psutil.wait_procs(procs, timeout=15)
        alive = [p for p in alive if _alive(p)]
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=10)
        assert not alive, f"nginx processes did not stop on QUIT: {[p.pid for p in alive]}"

    def prefix_masters(self) -> list[psutil.Process]:
        """nginx masters started with this prefix (a daemon is nobody's child: find it by
        its command line)."""
        out = []
        for proc in psutil.process_iter(["cmdline"]):
            line = " ".join(proc.info["cmdline"] or [])
            if "nginx: master process" in line and f"-p {self.prefix} " in f"{line} ":
                out.append(proc)
        return out

    def leftovers(self) -> list[int]:
        return [p.pid for p in self.known.values() if _alive(p)] + [
            p.pid for p in self.prefix_masters()
        ]

    def logged(self) -> int:
        """Requests in the access log so far (nginx writes each line as it finishes one)."""
        try:
            with open(self.access_log, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def wait_logged(self, more: int, timeout: float = 60) -> None:
        """Until `more` further requests have been served (evidence that a load is running)."""
        start = self.logged()
        deadline = time.monotonic() + timeout
        while self.logged() < start + more:
            assert time.monotonic() < deadline, f"fewer than {more} requests in {timeout} s"
            time.sleep(0.05)

    def assert_shim_loaded(self) -> None:
        """Shim mode: libmstack.so is mapped in every master and worker (after daemon's
        fork, the workers' setuid to www-data, a reload, and the binary upgrade's exec)."""
        if not self.launch.shim:
            return
        for m in self.masters:
            for p in [m, *self.worker_procs(m)]:
                maps = Path(f"/proc/{p.pid}/maps").read_text()
                assert "libmstack.so" in maps, f"no libmstack.so in {p.pid} {_cmdline(p)}"

    def access_pids(self) -> dict[int, int]:
        """{worker pid: requests} from the access log ($pid is its second field)."""
        out: dict[int, int] = {}
        with contextlib.suppress(OSError):
            for line in self.access_log.read_text().splitlines():
                parts = line.split()
                if len(parts) > 1 and parts[1].isdigit():
                    out[int(parts[1])] = out.get(int(parts[1]), 0) + 1
        return out


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return list(p.cmdline())
    except psutil.Error:
        return []


@contextlib.contextmanager
def running_nginx(launch: Launch, **kw: Any) -> Iterator[Nginx]:
    """nginx started (and stopped, every process of it gone, pass or fail) with `launch`; in
    shim mode the policy lists its listener (and `connect`, if given, for its upstream)."""
    need(NGINX)
    connect = kw.pop("connect", [])
    ip = launch.host.host_ip
    launch.write_policy(
        {"web": {"exe": ["nginx"], "listen": [f"{ip}:{WEB_PORT}"], "connect": connect}}
    )
    n = Nginx(launch, launch.dir / "nginx", ip, **kw)
    n.prefix.mkdir()
    n.prefix.chmod(0o755)
    docroot = n.prefix / "www"
    n.files = make_docroot(docroot, SIZES)
    try:
        n.start()
        n.assert_shim_loaded()
        yield n
    finally:
        n.stop()
    assert not n.leftovers(), f"nginx processes left behind: {n.leftovers()}"


def wait_listening(ip: str, port: int, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """Until the kernel has a listener on ip:port (under the shim too: the shadow listener),
    without connecting to it; fails at once if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"{proc.args!r} exited with status {proc.returncode}"
        cp = subprocess.run(["ss", "-tlnH", "src", f"{ip}:{port}"], capture_output=True,
                            text=True, timeout=10)  # fmt: skip
        if cp.stdout.strip():
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {ip}:{port} after {timeout} s")


@contextlib.contextmanager
def remote_http_server(rh: RemoteHost, root: Path, port: int = UPSTREAM_PORT) -> Iterator[None]:
    """Debian's `python3 -m http.server` (HTTP/1.1, so connections persist) in the remote
    namespace, on the kernel there, serving `root`."""
    need(PY3)
    log = open(root.parent / f"http-server-{port}.log", "wb")  # noqa: SIM115
    p = rh.popen(
        [
            str(PY3),
            "-m",
            "http.server",
            "-b",
            rh.remote_ip,
            "-d",
            str(root),
            "-p",
            "HTTP/1.1",
            str(port),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if rh.run(["ss", "-tlnH", "src", f"{rh.remote_ip}:{port}"]).stdout.strip():
                break
            assert p.poll() is None, f"http.server exited {p.returncode}"
            time.sleep(0.05)
        else:
            raise AssertionError(f"http.server is not listening on {rh.remote_ip}:{port}")
        yield
    finally:
        stop_process(p)
        log.close()
