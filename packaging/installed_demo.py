"""`make demo`'s scenario against an *installed* MultiStack (the .deb), never the source tree.

Every MultiStack program run here comes from ROOT (a chroot where the package is installed, or
/ for a host install): mstackd is started from the ExecStart line of ROOT's mstackd.service
(plus test-bed names, so it cannot clash with a real daemon), mstack-responder serves a TCP
port on its own AF_XDP port, and then the product's main job: ROOT's own Debian nginx (master,
2 workers as www-data, `daemon on`) starts under the installed `mstack-run --strict` with an
entry in ROOT's /etc/mstack/policy.toml listing its listener (the shipped file is restored
afterwards); its workers, running the packaged libmstack.so, join the listen group; a remote
host (a network namespace of the test bed) fetches files of 0 B to 10 MB (sha256 checked) and
holds a connection open; and the proof that UTCP carried them is the one scripts/demo.py gives:
the kernel's `ss` never holds a connection of the remote host on that port, `mstackctl conns`
shows the held one in a worker's stack with the policy's transport, the switch counters rose.
`mstackctl doctor` closes. Everything it creates is removed, pass or fail; it exits 0 when
every step passed.

Self-contained on purpose: the test bed (namespace, veth pair) comes from the source tree's
tests/testbed, and everything else that is not the product — the remote clients, the `ss`
watch, the nginx configuration — is written here in the standard library, not imported from
scripts/demo_kit.py (whose helpers run the venv's or the host's programs: one mistaken import
would test the source tree instead of the package) and not shipped in the .deb (test code has
no business on a production server).

  python3 packaging/installed_demo.py --root /path/to/chroot [--caps CAP,CAP,...]

--caps runs the daemon with its capability bounding set reduced to those (how the unit's
CapabilityBoundingSet= was checked); mstack-responder runs as `nobody`, an unprivileged
application of another user, as nginx's workers would be (--responder-user)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT_DIR / "tests"))

from testbed.netns import (  # noqa: E402
    RemoteHost,
    remote_host_cm,
    stop_process,
    unique_name,
    wait_line,
)

USER_PORT = 7000
SWEEP_WAIT = 3.0  # > mstackd's default sweep_interval (2 s)
ECHO = r"""
import socket, sys
ok = 0
for i in range(int(sys.argv[3])):
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        msg = f"hello from the installed package #{i}".encode()
        s.sendall(msg)
        ok += s.recv(200) == msg
print(ok)
"""
# Only installed locations: nothing of the source tree or of a venv is on these paths.
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def say(msg: str = "") -> None:
    print(msg, flush=True)


class Installed:
    """Runs installed programs: `chroot ROOT CMD` (or CMD itself when ROOT is /), with a clean
    environment that points only at installed locations."""

    def __init__(self, root: Path, caps: str | None, user: str | None = None) -> None:
        self.root = root
        self.caps = caps
        self.user = user

    def argv(self, cmd: list[str], caps: bool = False) -> list[str]:
        out = cmd
        if caps and self.caps is not None:
            bset = "-all" + "".join(f",+{c.strip().lower().removeprefix('cap_')}"
                                    for c in self.caps.split(",") if c.strip())  # fmt: skip
            out = ["setpriv", f"--bounding-set={bset}", "--", *out]
        if self.root != Path("/"):
            out = ["chroot", str(self.root), *out]
        return out

    def as_user(self) -> list[str]:
        """setpriv to self.user (uid and primary gid from ROOT's /etc/passwd), or nothing."""
        if not self.user:
            return []
        for line in (self.root / "etc/passwd").read_text().splitlines():
            f = line.split(":")
            if f[0] == self.user:
                return ["setpriv", f"--reuid={f[2]}", f"--regid={f[3]}", "--clear-groups"]
        raise RuntimeError(f"no user {self.user} in {self.root}/etc/passwd")

    def run(
        self, cmd: list[str], env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(cmd), env={**CLEAN_ENV, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip

    def exec_start(self) -> list[str]:
        unit = self.root / "lib/systemd/system/mstackd.service"
        for line in unit.read_text().splitlines():
            if line.startswith("ExecStart="):
                return shlex.split(line.removeprefix("ExecStart="))
        raise RuntimeError(f"{unit}: no ExecStart line")


def stop(p: subprocess.Popen[str], timeout: float = 20) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


@contextlib.contextmanager
def daemon(
    inst: Installed, host: RemoteHost, run_dir: Path, log: Path
) -> Iterator[subprocess.Popen[str]]:
    """mstackd from the unit's ExecStart line, attached to the test bed's link, with test-bed
    names for its pins, ports namespace and port veths (the leak check knows them)."""
    name = unique_name()
    argv = [
        *inst.exec_start(),
        "--attach", host.host_if,
        "--run-dir", str(run_dir),
        "--bpf-dir", f"/sys/fs/bpf/{name}-pkg",
        "--ports-netns", f"{name}p",
        "--port-prefix", name.replace("-", "")[:10],
        "-v",
    ]  # fmt: skip
    say("$ " + " ".join(argv))
    with open(log, "w") as f:
        p = subprocess.Popen(inst.argv(argv, caps=True), env=CLEAN_ENV, stdout=subprocess.PIPE,
                             stderr=f, text=True)  # fmt: skip
    try:
        wait_line(p, "mstackd: ready", timeout=30)
        yield p
    finally:
        stop(p)
        with contextlib.suppress(OSError):
            os.rmdir(f"/sys/fs/bpf/{name}-pkg")


NGINX_PORT = 8080
NGINX_WORKERS = 2
NGINX_WORK = Path("/tmp/mstack-nginx-demo")  # inside ROOT
POLICY = Path("/etc/mstack/policy.toml")  # the package's conffile, inside ROOT
SIZES = {"0.bin": 0, "1.bin": 1, "1k.bin": 1 << 10, "64k.bin": 64 << 10,
         "1m.bin": 1 << 20, "10m.bin": 10 << 20}  # fmt: skip
STEERED = ("to_port_new", "to_port_flow", "to_port_conn")

# The remote host fetches NAMES (comma-separated) from HOST:PORT twice: over one keep-alive
# connection, then one connection each (Connection: close); per file its status, size and
# sha256, per round the local ports used (one per connection).
REMOTE_FETCH = r"""
import hashlib, http.client, json, sys
host, port, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
out = []
for keepalive in (True, False):
    files, ports, c = [], set(), None
    for n in names:
        if c is None or not keepalive:
            c = http.client.HTTPConnection(host, port, timeout=30)
            c.connect()
        ports.add(c.sock.getsockname()[1])
        c.request("GET", "/" + n, headers={} if keepalive else {"Connection": "close"})
        r = c.getresponse()
        body = r.read()
        files.append([n, r.status, len(body), hashlib.sha256(body).hexdigest()])
        if not keepalive:
            c.close()
    c.close()
    out.append({"keepalive": keepalive, "files": files, "connections": len(ports)})
print(json.dumps(out))
"""

# The remote host holds one keep-alive connection open, from its local port HOLD_PORT (the
# namespace is the test bed's own: nothing else uses it): a GET, "open", wait for a line on
# stdin, a second GET on the same connection, "done".
HOLD_PORT = 41000
REMOTE_HOLD = r"""
import http.client, sys
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=30,
                               source_address=("", int(sys.argv[5])))
c.connect()
for i in range(2):
    c.request("GET", sys.argv[3])
    r = c.getresponse()
    assert r.status == 200 and len(r.read()) == int(sys.argv[4]), r.status
    if i == 0:
        print("open", flush=True)
        sys.stdin.readline()
print("done", flush=True)
"""


class Checks:
    """Printed as `ok`/`FAILED` lines; the failures go into the demo's result."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.passed = 0

    def __call__(self, ok: bool, what: str, detail: str = "") -> bool:
        say(f"  {'ok' if ok else 'FAILED'}: {what}" + (f" — {detail}" if detail else ""))
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"nginx: {what}" + (f" ({detail})" if detail else ""))
        return ok


class StepError(RuntimeError):
    """A check the rest of the nginx step depends on failed."""


def proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process, None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = text[text.rindex(")") + 2 :].split()
    return int(f[1]), f[0], int(f[19])


class Proc:
    """A process we did not start as a child (nginx daemonizes), known by pid and start time so
    that a reused pid is never signalled."""

    def __init__(self, pid: int) -> None:
        st = proc_stat(pid)
        self.pid, self.start = pid, (st[2] if st else -1)

    def alive(self) -> bool:
        st = proc_stat(self.pid)
        return st is not None and st[2] == self.start and st[1] != "Z"

    def cmdline(self) -> str:
        with contextlib.suppress(OSError):
            return Path(f"/proc/{self.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        return ""

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def workers_of(master: Proc) -> list[Proc]:
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and (st := proc_stat(int(d.name))) and st[0] == master.pid:
            p = Proc(int(d.name))
            if "worker process" in p.cmdline():
                out.append(p)
    return out


class SsWatch:
    """The kernel's established TCP connections from `remote_ip` to local port `port` (`ss`),
    sampled 4 times a second in a thread and on demand; `seen` keeps every one."""

    def __init__(self, remote_ip: str, port: int) -> None:
        self.remote_ip, self.port = remote_ip, port
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ss-watch", daemon=True)

    def sample(self) -> list[str]:
        cp = subprocess.run(["ss", "-tnH", "state", "established", "dst", self.remote_ip,
                             "sport", "=", f":{self.port}"],
                            capture_output=True, text=True, timeout=10, check=True)  # fmt: skip
        conns = [" -> ".join(ln.split()[2:4][::-1]) for ln in cp.stdout.splitlines() if ln.strip()]
        self.seen.update(conns)
        self.samples += 1
        return conns

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                self.sample()

    def __enter__(self) -> SsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def nginx_conf(work: Path, ip: str) -> str:
    """Close to Debian's stock nginx.conf: a master, `daemon on`, workers as www-data,
    sendfile, tcp_nopush, mime types, gzip; pid, logs and temp paths under `work`. Without
    modules-enabled/ (nginx-light's load_module paths are relative to the prefix, -p)."""
    temps = " ".join(f"{k}_temp_path {work}/tmp/{k};"
                     for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))  # fmt: skip
    return (
        f"user www-data;\nworker_processes {NGINX_WORKERS};\ndaemon on;\npid {work}/nginx.pid;\n"
        f"error_log {work}/error.log;\n"
        "events { worker_connections 768; }\n"
        "http {\n  sendfile on; tcp_nopush on; types_hash_max_size 2048;\n"
        "  include /etc/nginx/mime.types; default_type application/octet-stream;\n"
        f"  access_log {work}/access.log; gzip on; keepalive_requests 1000000;\n  {temps}\n"
        f"  server {{ listen {ip}:{NGINX_PORT}; root {work}/www; }}\n}}\n"
    )


def policy_entry(ip: str) -> str:
    return (
        "\n# Added by installed_demo.py for the nginx step (the shipped file is restored).\n"
        f'[apps.web]\nexe = ["nginx"]\nlisten = ["{ip}:{NGINX_PORT}"]\n\n'
        '[apps.web.tcp]\ncongestion_control = "cubic"\nsack = true\nwindow_scaling = true\n'
        "timestamps = true\ninitial_window = 10\n"
    )


def switch_counters(stats: dict[str, Any]) -> dict[str, int]:
    ing, eg = stats.get("ingress", {}), stats.get("egress", {})
    return {
        "steered": sum(int(ing.get(k, 0)) for k in STEERED),
        "new_flows": int(ing.get("to_port_new", 0)),
        "sent": int(eg.get("sent", 0)),
        # every other egress counter but `frames` is a drop by reason (daemon/bpf/mstack_abi.h)
        "dropped": sum(int(v) for k, v in eg.items() if k not in ("sent", "frames")),
        "group_empty": int(ing.get("group_empty", 0)),
    }


def indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + ln for ln in text.rstrip().splitlines())


def nginx_step(inst: Installed, host: RemoteHost, env: dict[str, str]) -> list[str]:
    """Debian's nginx (in ROOT) through the installed mstack-run --strict, its listener listed
    in ROOT's /etc/mstack/policy.toml: the workers join the listen group, the remote host
    fetches files (sha256 checked), and UTCP carried them — the kernel's `ss` never holds a
    connection of the remote host on that port, `mstackctl conns` shows a held one in a
    worker's stack, the switch counters rose. The proof of scripts/demo.py, on the package."""
    check = Checks()
    real = inst.root / NGINX_WORK.relative_to("/")
    policy = inst.root / POLICY.relative_to("/")
    shipped = policy.read_bytes()
    shims = sorted((inst.root / "usr/lib").glob("*/libmstack.so"))
    master: Proc | None = None
    procs: dict[int, Proc] = {}

    def ctl(*args: str) -> str:
        r = inst.run(["mstackctl", *args], env)
        if r.returncode != 0:
            raise StepError(f"mstackctl {' '.join(args)}: exit {r.returncode}: {r.stderr}")
        return r.stdout

    def ctl_json(*args: str) -> Any:
        return json.loads(ctl(*args, "--json"))

    def require(ok: bool, what: str, detail: str = "") -> None:
        if not check(ok, what, detail):
            raise StepError(what)

    try:
        say()
        say(f"nginx (Debian's, in the root) under the installed mstack-run, its listener "
            f"{host.host_ip}:{NGINX_PORT} listed for UTCP")  # fmt: skip
        require(len(shims) == 1, "the package installed one libmstack.so",
                "" if len(shims) == 1 else str(shims))  # fmt: skip
        shutil.rmtree(real, ignore_errors=True)
        (real / "www").mkdir(parents=True)
        (real / "tmp").mkdir()
        real.chmod(0o755)
        os.chown(real / "tmp", *www_data(inst.root))
        sums = {}
        rng = random.Random(6)
        for name, size in SIZES.items():
            data = rng.randbytes(size)
            (real / "www" / name).write_bytes(data)
            (real / "www" / name).chmod(0o644)
            sums[name] = hashlib.sha256(data).hexdigest()
        (real / "www").chmod(0o755)
        (real / "nginx.conf").write_text(nginx_conf(NGINX_WORK, host.host_ip))
        policy.write_bytes(shipped + policy_entry(host.host_ip).encode())
        say(f"  {POLICY} (the conffile) with an entry for nginx, checked by mstackctl policy "
            "check:")  # fmt: skip
        say(indent(policy_entry(host.host_ip).strip(), "    | "))
        ctl("policy", "check", str(POLICY))
        argv = ["mstack-run", "--strict", "--", "nginx", "-p", str(NGINX_WORK),
                "-c", f"{NGINX_WORK}/nginx.conf", "-e", f"{NGINX_WORK}/error.log"]  # fmt: skip
        say("  $ " + " ".join(argv))
        with open(real / "stderr.log", "wb") as err:
            r = subprocess.run(inst.argv(argv), env={**CLEAN_ENV, **env}, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=err, timeout=60)  # fmt: skip
        stderr = (real / "stderr.log").read_text(errors="replace")
        require(r.returncode == 0, "mstack-run --strict started nginx (daemon on)",
                f"exit {r.returncode}: {stderr[-2000:]}" if r.returncode else "")  # fmt: skip
        deadline = time.monotonic() + 20
        workers: list[Proc] = []
        while time.monotonic() < deadline:
            if master is None:
                with contextlib.suppress(OSError, ValueError):
                    m = Proc(int((real / "nginx.pid").read_text()))
                    if "master process" in m.cmdline():
                        master = procs[m.pid] = m
            if master is not None:
                workers = workers_of(master)
                procs.update((w.pid, w) for w in workers)
                if len(workers) >= NGINX_WORKERS:
                    break
            time.sleep(0.05)
        require(master is not None and len(workers) >= NGINX_WORKERS,
                f"nginx master and {NGINX_WORKERS} workers up",
                f"master {master and master.pid}, workers {[w.pid for w in workers]}")  # fmt: skip
        assert master is not None
        users = {w.pid: Path(f"/proc/{w.pid}").stat().st_uid for w in workers}
        say(f"  master pid {master.pid}, workers {', '.join(map(str, users))} (uid "
            f"{', '.join(map(str, set(users.values())))})")  # fmt: skip
        shim = str(shims[0])
        loaded = [p.pid for p in [master, *workers]
                  if shim in Path(f"/proc/{p.pid}/maps").read_text()]  # fmt: skip
        check(len(loaded) == 1 + len(workers),
              f"the packaged {shim.removeprefix(str(inst.root))} is loaded in the master and "
              "every worker", f"in {loaded}")  # fmt: skip
        members: list[int] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(members) < NGINX_WORKERS:
            for b in ctl_json("bindings"):
                if b.get("kind") == "listen" and b.get("port") == NGINX_PORT:
                    members = list(b.get("members", []))
            time.sleep(0.1)
        require(len(members) >= NGINX_WORKERS, "the workers joined the listen group",
                f"members (ports) {members}")  # fmt: skip
        say("  $ mstackctl ports")
        say(indent(ctl("ports")))
        say("  $ mstackctl bindings")
        say(indent(ctl("bindings")))
        port_pids = {p["pid"] for p in ctl_json("ports")}
        check(port_pids >= set(users) and master.pid not in port_pids,
              "each worker has an AF_XDP port of its own, the master none",
              f"port owners {sorted(port_pids)}")  # fmt: skip
        before = switch_counters(ctl_json("stats"))

        with SsWatch(host.remote_ip, NGINX_PORT) as watch:
            names = sorted(SIZES, key=lambda n: SIZES[n])
            t0 = time.monotonic()
            r2 = host.python(REMOTE_FETCH, host.host_ip, str(NGINX_PORT), ",".join(names),
                             check=False, timeout=180)  # fmt: skip
            if r2.returncode != 0:
                require(False, "the remote host fetched the files", r2.stderr[-2000:])
            for rnd in json.loads(r2.stdout):
                bad = [f"{n}: HTTP {code}, {size} B" for n, code, size, sha in rnd["files"]
                       if code != 200 or size != SIZES[n] or sha != sums[n]]  # fmt: skip
                want = 1 if rnd["keepalive"] else len(names)
                mode = ("one keep-alive connection" if rnd["keepalive"]
                        else "Connection: close, one each")  # fmt: skip
                check(not bad and rnd["connections"] == want,
                      f"{len(names)} files (0 B to 10 MB) fetched from the remote host over "
                      f"{mode}, sha256 checked",
                      "; ".join(bad) or f"{rnd['connections']} connection(s)")  # fmt: skip
            say(f"  ({time.monotonic() - t0:.1f} s for both rounds)")

            size = SIZES["64k.bin"]
            rport = HOLD_PORT
            hold = host.python_popen(REMOTE_HOLD, host.host_ip, str(NGINX_PORT), "/64k.bin",
                                     str(size), str(rport), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
            try:
                wait_line(hold, "open", timeout=30)
                say(f"  the remote host holds {host.remote_ip}:{rport} -> {host.host_ip}:"
                    f"{NGINX_PORT} open (keep-alive, after a 64 KB GET)")  # fmt: skip
                ss_now = watch.sample()
                mine: list[dict[str, Any]] = []
                deadline = time.monotonic() + 5  # stacks publish every 250 ms
                while not mine and time.monotonic() < deadline:
                    mine = [c for c in ctl_json("conns")
                            if c.get("remote") == f"{host.remote_ip}:{rport}"
                            and c.get("state") == "ESTABLISHED"]  # fmt: skip
                    if not mine:
                        time.sleep(0.1)
                say("  $ mstackctl conns")
                say(indent(ctl("conns")))
                check(not ss_now, "the kernel does not have it (ss, sampled while it is open)",
                      "; ".join(ss_now))  # fmt: skip
                if check(bool(mine), "mstackctl conns shows it ESTABLISHED in a worker's stack"):
                    c, o = mine[0], mine[0].get("options", {})
                    check(c.get("pid") in users and c.get("cc") == "cubic"
                          and bool(o.get("sack")) and bool(o.get("timestamps"))
                          and bool(o.get("wscale")),
                          "in a worker (pid {}), with the policy's transport: cubic, SACK, "
                          "timestamps, window scaling".format(c.get("pid")),
                          f"cwnd {c.get('cwnd')} B, mss {o.get('mss')}, srtt "
                          f"{c.get('srtt_us', 0) / 1000:.2f} ms")  # fmt: skip
                assert hold.stdin is not None
                hold.stdin.write("go\n")
                hold.stdin.flush()
                wait_line(hold, "done", timeout=30)
                hold.wait(timeout=30)
                check(hold.returncode == 0, "the held connection served a second request")
            finally:
                stop_process(hold)

        after = switch_counters(ctl_json("stats"))
        delta = {k: after[k] - before[k] for k in after}
        check(not watch.seen, f"ss: no established kernel connection from {host.remote_ip} to "
              f":{NGINX_PORT} during the run", f"{watch.samples} samples"
              + (f"; seen: {sorted(watch.seen)[:3]}" if watch.seen else ""))  # fmt: skip
        check(delta["new_flows"] >= len(names) + 2 and delta["steered"] > 0
              and delta["sent"] > 0, "switch counters rose",
              f"{delta['new_flows']} new flows (SYNs) steered to ports, {delta['steered']} "
              f"frames steered in, {delta['sent']} frames sent by the ports")  # fmt: skip
        check(delta["dropped"] == 0 and delta["group_empty"] == 0,
              "nothing dropped by the egress check, no flow left to the kernel's shadow",
              f"egress drops {delta['dropped']}, empty-group passes "
              f"{delta['group_empty']}")  # fmt: skip
        msgs = [ln for ln in (real / "stderr.log").read_text(errors="replace").splitlines()
                if "libmstack" in ln or "mstack-run" in ln]  # fmt: skip
        check(not msgs, "mstack-run and the shim reported no listed socket left on the kernel",
              "; ".join(msgs[:3]))  # fmt: skip
    except StepError:
        pass  # its check said what failed
    except Exception as e:  # a tool failure: the step fails with the reason, cleanup runs
        check(False, f"{type(e).__name__}: {e}")
    finally:
        if master is not None:
            procs.update((w.pid, w) for w in workers_of(master))
            master.signal(signal.SIGQUIT)  # graceful stop, by pid
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(p.alive() for p in procs.values()):
            time.sleep(0.1)
        killed = [p.pid for p in procs.values() if p.alive()]
        for p in procs.values():
            p.signal(signal.SIGKILL)
        if procs:
            check(not killed, f"nginx stopped by pid ({', '.join(map(str, procs))})",
                  f"killed: {killed}" if killed else "")  # fmt: skip
        if check.failures:
            with contextlib.suppress(OSError):
                for log in ("stderr.log", "error.log"):
                    say(f"--- nginx {log}\n" + (real / log).read_text(errors="replace")[-3000:])
        policy.write_bytes(shipped)
        shutil.rmtree(real, ignore_errors=True)
    say(f"  nginx on UTCP: {check.passed} checks passed, {len(check.failures)} failed")
    return check.failures


def www_data(root: Path) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == "www-data":
            return int(f[2]), int(f[3])
    return 33, 33


def scenario(inst: Installed, host: RemoteHost) -> list[str]:
    """The demo's steps; returns the failures (empty: all good)."""
    failures: list[str] = []
    # The run directory the unit's RuntimeDirectory= would make, inside ROOT.
    run_dir = Path("/run/mstack-pkgtest")
    real_run_dir = inst.root / run_dir.relative_to("/")
    real_run_dir.mkdir(mode=0o755, exist_ok=True)
    log = Path(f"/tmp/mstackd-pkgtest-{os.getpid()}.log")
    env = {"MSTACK_RUN_DIR": str(run_dir)}
    try:
        with daemon(inst, host, run_dir, log) as d:
            say(f"mstackd (pid {d.pid}, installed) attached the switch to {host.host_if}")
            r = inst.run(["mstackctl", "status", "--json"], env)
            st = json.loads(r.stdout) if r.returncode == 0 else {}
            if [n["iface"] for n in st.get("nics", [])] != [host.host_if]:
                failures.append(f"mstackctl status: {r.stdout} {r.stderr}")
            as_user = inst.as_user()
            resp = subprocess.Popen(
                inst.argv([*as_user, "mstack-responder", "--run-dir", str(run_dir),
                           "--listen", f"{host.host_ip}:{USER_PORT}", "--max-seconds", "60"]),
                env=CLEAN_ENV, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert resp.stdout is not None
                ready = resp.stdout.readline().split()
                if not ready or ready[0] != "ready":
                    stop(resp)
                    failures.append(f"mstack-responder did not start (status {resp.returncode})")
                else:
                    say(f"mstack-responder (pid {resp.pid}, installed, user "
                        f"{inst.user or 'root'}) on AF_XDP port {ready[1]}")  # fmt: skip
                    # Past a claim sweep: the daemon must still see the responder hold its
                    # socket (/proc/PID/fd of another user's process).
                    time.sleep(SWEEP_WAIT)
                    echoed = int(host.python(ECHO, host.host_ip, str(USER_PORT), "5").stdout)
                    say(f"  from the remote host: the user-level port echoed {echoed}/5")
                    if echoed != 5:
                        failures.append(f"echo: {echoed}/5")
                    r = inst.run(["mstackctl", "stats", "--json"], env)
                    stats = json.loads(r.stdout)
                    if stats["ingress"]["to_port_new"] < 5:
                        failures.append(f"switch counters: {stats['ingress']}")
                    say("$ mstackctl bindings")
                    say(inst.run(["mstackctl", "bindings"], env).stdout.rstrip())
            finally:
                stop(resp)
                if resp.stdout is not None:
                    resp.stdout.close()
            # mstack-run with the packaged shim, the daemon reachable.
            r = inst.run(["mstack-run", "--", "/bin/true"], {**env, "MSTACK_DEBUG": "1"})
            say("$ MSTACK_DEBUG=1 mstack-run -- /bin/true")
            say((r.stdout + r.stderr).rstrip())
            if r.returncode != 0 or "libmstack: loaded" not in r.stderr:
                failures.append("mstack-run did not preload the packaged shim")
            if (inst.root / "usr/sbin/nginx").exists():
                failures += nginx_step(inst, host, env)
            else:
                failures.append(f"no nginx in {inst.root} (apt install nginx-light there)")
            r = inst.run(["mstackctl", "doctor", "--iface", host.host_if], env, timeout=120)
            say(f"$ mstackctl doctor --iface {host.host_if}   (exit {r.returncode})")
            say(r.stdout.rstrip())
            if r.returncode != 0 or "mstackd reachable" not in r.stdout:
                failures.append(f"mstackctl doctor: {r.stdout} {r.stderr}")
        if d.returncode != 0:
            failures.append(f"mstackd exited with status {d.returncode} on SIGTERM")
    finally:
        with contextlib.suppress(OSError):
            real_run_dir.rmdir()
        if failures:
            with contextlib.suppress(OSError):
                say("--- mstackd log ---\n" + log.read_text())
        log.unlink(missing_ok=True)
    return failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/"), help="where the package is installed")
    ap.add_argument("--caps", help="bounding set for mstackd, e.g. CAP_NET_ADMIN,CAP_BPF")
    ap.add_argument(
        "--responder-user",
        default="nobody",
        help="user mstack-responder runs as (default nobody; '' for root)",
    )
    a = ap.parse_args()
    if os.geteuid() != 0:
        say("needs root (network namespaces, XDP, AF_XDP)")
        return 1
    inst = Installed(a.root.resolve(), a.caps, a.responder_user or None)
    t0 = time.monotonic()
    with remote_host_cm() as host:
        say(f"test bed: remote host {host.remote_ip} (namespace {host.ns}); this host "
            f"{host.host_ip} on {host.host_if}")  # fmt: skip
        failures = scenario(inst, host)
    for f in failures:
        say(f"FAILED: {f}")
    say(f"installed demo: {'OK' if not failures else 'FAILED'} ({time.monotonic() - t0:.1f} s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
