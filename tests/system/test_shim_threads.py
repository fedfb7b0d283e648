"""Threads share a process's stack safely (issue 6): tests/system/c/thread_stress.c, one process
with about twenty threads on one UTCP stack, under libmstack.so (normal and ASan/UBSan builds),
while a client in the remote namespace hammers its listener and the program itself opens
connections to a listed echo server there.

The program serves each connection one of six ways (blocking pool, dup/dup2'ed descriptors,
EPOLLONESHOT re-armed from another thread, EPOLLET, poll and select over mixed kernel and UTCP
sets), accepts in two threads blocked on one listener, closes sockets other threads wait on,
shuts down sockets under another thread's blocked recv, and checks every byte (crc32 of each
payload on its side; the client compares every echoed byte). The test asserts no error, every
connection served, no sanitizer report, every thread joined and a clean exit, and the proof
that UTCP carried both directions (no kernel connection with the remote host in `ss`,
`mstackctl conns` shows them, the switch counters rose).

The same program also runs without the shim (`kernel`): its own checks pass there, which proves
the test. Short form (`make test`): up to 4,000 connections of 0-256 KB, 32 at a time, for at
most 12 s per build; MSTACK_FULL=1: up to 30,000 for at most 30 s.

Four defects of the shim that this file found have tests of their own below (each also runs
without the shim); they are fixed. The stress still registers a connection in each epoll
instance before its threads wait, and stops its acceptors with local connections."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appkit import FULL, Launch, Proof, Watch
from mstack_testkit import Mstackd
from system.test_shim_utcp import shim_env as utcp_shim_env
from testbed.netns import RemoteHost, stop_process, wait_line

pytestmark = pytest.mark.system

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", REPO / "build"))
VARIANTS = {"normal": BUILD, "asan": BUILD / "asan"}  # the shim's builds (and the program's)
PORT = 8491
ECHO_PORT = 8492
CONNS, MAX_SIZE, CONCURRENCY = (30000, 256 << 10, 32) if FULL else (4000, 256 << 10, 32)
LOAD_SECS = 30 if FULL else 12  # no new connection after this; the rest still finish
SLOWEST_S = 10  # one connection's exchange (up to 256 KB each way); a stall shows here
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def stress_argv(variant: str) -> list[str]:
    binary = VARIANTS.get(variant, BUILD) / "tests" / "system" / "thread_stress"
    assert binary.exists(), f"{binary} is missing: run make build"
    return [str(binary)]


def shim_env(variant: str, daemon: Mstackd | None, policy_toml: str) -> dict[str, str]:
    """The shim's environment (test_shim_utcp's, without PYTHONUNBUFFERED); `kernel`: no
    shim."""
    if variant == "kernel":
        return dict(os.environ)
    assert daemon is not None
    return utcp_shim_env(variant, daemon, policy_toml, unbuffered=False)


def policy_for(rh: RemoteHost) -> str:
    return (
        f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}"]\nconnect = ["{rh.remote_ip}/32:{ECHO_PORT}"]\n'
    )


# An echo server in the remote namespace for the program's outgoing connections, a thread per
# connection: a u32 length (little endian), then that many bytes echoed back, then it closes
# first (the program's side then holds no leased port in TIME-WAIT). Resets are expected (the
# program closes some connections early, with SO_LINGER 0).
ECHO = r"""
import socket, struct, sys, threading
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((sys.argv[1], int(sys.argv[2])))
ls.listen(256)
print("ready", flush=True)
def serve(c):
    try:
        head = b""
        while len(head) < 4:
            d = c.recv(4 - len(head))
            if not d:
                return
            head += d
        left = struct.unpack("<I", head)[0]
        while left:
            d = c.recv(min(left, 65536))
            if not d:
                return
            c.sendall(d)
            left -= len(d)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# The remote client: TOTAL connections, CONC at a time, random sizes; each sends its header
# (length, crc32), the payload in 64 KB writes while reading the echo, then expects exactly the
# payload back, "OK!!" and the end of stream. The first connection stops after 10 bytes and is
# held open ("holding") until a line on stdin, so the test can look at the kernel's table.
DRIVER = r"""
import asyncio, json, random, struct, sys, threading, time, zlib
ip, port, total, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
maxsize, secs = int(sys.argv[5]), float(sys.argv[6])
res = {"ok": 0, "failed": 0, "bytes": 0, "started": 0, "errors": [], "secs": 0.0, "slowest": 0.0}

def size_of(rng):
    k = rng.random()
    if k < 0.1:
        return 0
    if k < 0.3:
        return rng.randrange(1, 1500)
    if k < 0.7:
        return rng.randrange(1500, 65536)
    return rng.randrange(65536, maxsize + 1)

async def one(i, payload, hold=None):
    r, w = await asyncio.open_connection(ip, port)
    w.write(struct.pack("<II", len(payload), zlib.crc32(payload)))
    async def send():
        at = 0
        if hold is not None:
            w.write(payload[:10])
            await w.drain()
            at = 10
            await hold.wait()
        while at < len(payload):
            w.write(payload[at:at + 65536])
            at += 65536
            await w.drain()
        await w.drain()
    async def recv():
        if hold is not None:
            first = await r.readexactly(10)
            print("holding", flush=True)
            return first + await r.readexactly(len(payload) - 10 + 4), await r.read()
        return await r.readexactly(len(payload) + 4), await r.read()
    try:
        _, (echo, rest) = await asyncio.wait_for(asyncio.gather(send(), recv()), 30)
    finally:
        w.close()
    if echo[:-4] != payload:
        at = next((k for k in range(len(payload)) if echo[k] != payload[k]), len(payload))
        raise AssertionError(f"echo differs from byte {at} of {len(payload)}")
    if echo[-4:] != b"OK!!" or rest:
        raise AssertionError(f"trailer {echo[-4:]!r}, then {len(rest)} more bytes")

async def main():
    loop = asyncio.get_running_loop()
    hold = asyncio.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), loop.call_soon_threadsafe(hold.set)),
                     daemon=True).start()
    sem = asyncio.Semaphore(conc)
    t0 = time.monotonic()
    async def run(i, payload, h=None):
        async with sem:
            if time.monotonic() - t0 > secs:
                return
            res["started"] += 1
            t = time.monotonic()
            try:
                await one(i, payload, h)
                if h is None:
                    res["slowest"] = max(res["slowest"], round(time.monotonic() - t, 3))
                res["ok"] += 1
                res["bytes"] += len(payload)
            except Exception as e:
                res["failed"] += 1
                if len(res["errors"]) < 20:
                    res["errors"].append(f"conn {i} ({len(payload)} B): {e!r}")
    rng = random.Random(6)
    held = asyncio.create_task(run(0, rng.randbytes(1000), hold))
    await hold.wait()
    await asyncio.gather(held, *(run(i, rng.randbytes(size_of(rng))) for i in range(1, total)))
    res["secs"] = round(time.monotonic() - t0, 1)

asyncio.run(main())
print(json.dumps(res), flush=True)
"""


def check_clean(err: str) -> None:
    for mark in SANITIZER_MARKS:
        assert mark not in err, err[-20000:]


def finish(p: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Tell the program to stop; its report (the last line on stdout)."""
    assert p.stdin is not None
    try:
        p.stdin.write("stop\n")
        p.stdin.flush()
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(p)
        pytest.fail(f"thread_stress did not finish in {timeout} s")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"no report (exit {p.returncode})\nstdout:\n{out}"
    return dict(json.loads(lines[-1]))


@pytest.fixture
def echo_server(remote_host: RemoteHost) -> subprocess.Popen[str]:
    rh = remote_host
    return rh.python_popen(ECHO, rh.remote_ip, str(ECHO_PORT), ready="ready", ready_timeout=20)


def daemon_for(variant: str, request: pytest.FixtureRequest) -> Mstackd | None:
    return None if variant == "kernel" else request.getfixturevalue("mstackd")


@pytest.mark.parametrize("variant", ["kernel", *VARIANTS])
def test_threads_share_one_stack(
    remote_host: RemoteHost,
    echo_server: subprocess.Popen[str],
    variant: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    rh = remote_host
    daemon = daemon_for(variant, request)
    shim = daemon is not None
    errlog = tmp_path / "stress.err"
    t0 = time.monotonic()
    with open(errlog, "w") as errf:
        p = subprocess.Popen(
            [*stress_argv(variant), "--listen", f"{rh.host_ip}:{PORT}",
             "--echo", f"{rh.remote_ip}:{ECHO_PORT}", "--secs", str(LOAD_SECS + 120)],
            env=shim_env(variant, daemon, policy_for(rh)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errf, text=True,
        )  # fmt: skip
    try:
        wait_line(p, "ready", 30)
        launch = Launch("shim" if shim else "kernel", rh, tmp_path, daemon)
        watches = [
            Watch("accepted", rh.remote_ip, utcp=shim, local_port=PORT),
            Watch("outgoing", rh.remote_ip, utcp=shim, remote_port=ECHO_PORT),
        ]
        with Proof(launch, watches, [errlog]) as proof:
            drv = rh.python_popen(
                DRIVER, rh.host_ip, str(PORT), str(CONNS), str(CONCURRENCY), str(MAX_SIZE),
                str(LOAD_SECS), ready="holding", ready_timeout=30, stdin=subprocess.PIPE,
            )  # fmt: skip
            proof.sample_held()  # the driver's held connection and the program's held one
            assert drv.stdin is not None
            drv.stdin.write("go\n")
            drv.stdin.flush()
            dout, derr = drv.communicate(timeout=LOAD_SECS + 120)
            assert drv.returncode == 0, dout + derr
            load = json.loads(dout.strip().splitlines()[-1])
            proof.sample()
            rep = finish(p, timeout=90)
        err = errlog.read_text(errors="replace")
        check_clean(err)
        print(f"{variant}: {time.monotonic() - t0:.1f} s; client {load}; program {rep}")

        errors = [ln for ln in err.splitlines() if ln.startswith("ERROR:")]
        assert rep["errors"] == 0 and not errors, "\n".join(errors[:40])
        assert p.returncode == 0, f"exit {p.returncode}\n{err[-5000:]}"
        assert load["failed"] == 0 and load["ok"] == load["started"], load
        assert load["ok"] >= min(CONNS, 1000), load  # the load ran (bounded by LOAD_SECS)
        assert load["slowest"] < SLOWEST_S, load  # workers wait without timeouts
        # every connection the listener took was served and verified, by every way of serving
        assert rep["accepted"] - rep["accepted_kernel"] == load["started"], (rep, load)
        assert sum(rep["served"].values()) == rep["accepted"], rep
        assert all(n > 0 for n in rep["served"].values()), rep["served"]
        assert rep["local_ok"] == rep["accepted_kernel"] > 0, rep
        for key in ("out_ok", "out_threads", "dup2_live", "cw_closes", "cw_polls", "shut_ok"):
            assert rep[key] > 0, (key, rep)
        assert f"joined {rep['threads']} threads" in err, err[-3000:]
        # Every descriptor the program made is closed again; under the shim the main thread
        # may still hold the eventfd it waits with (a thread's goes when the thread ends).
        growth = rep["fd_end"] - rep["fd_base"]
        assert 0 <= growth <= (1 if shim else 0), (growth, rep)
        # shut_late: a SHUT_RD that did not wake the blocked recv at once
        assert rep["shut_late"] == 0, rep
        if shim:
            assert "UTCP" in err and "stays on the kernel" not in err, err[-3000:]
            assert f"connection to {rh.remote_ip}:{ECHO_PORT}: UTCP" in err, err[-3000:]
        proof.verify()
    except BaseException:
        if p.poll() is None:
            p.kill()
        print(f"program stderr (tail):\n{errlog.read_text(errors='replace')[-10000:]}")
        raise
    finally:
        stop_process(p)


def run_only(
    what: str, rounds: int, variant: str, rh: RemoteHost, daemon: Mstackd | None
) -> dict[str, Any]:
    """One part of the program on its own (no listener, no load): its report."""
    p = subprocess.Popen(
        [*stress_argv(variant), "--echo", f"{rh.remote_ip}:{ECHO_PORT}", "--only", what,
         "--rounds", str(rounds)],
        env=shim_env(variant, daemon, policy_for(rh)),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        out, err = p.communicate(timeout=120)
    finally:
        stop_process(p)
    check_clean(err)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"exit {p.returncode}\nstdout:\n{out}\nstderr:\n{err[-5000:]}"
    if daemon is not None:
        assert f"connection to {rh.remote_ip}:{ECHO_PORT}: UTCP" in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith(("ERROR:", "note:"))]
    rep = dict(json.loads(lines[-1]))
    rep["said"] = errors
    return rep


Only = Callable[[str, int], dict[str, Any]]


@pytest.fixture
def only(
    remote_host: RemoteHost,
    echo_server: subprocess.Popen[str],
    variant: str,
    request: pytest.FixtureRequest,
) -> Only:
    """run_only(what, rounds) for the test's variant, with the echo server (and mstackd but
    for `kernel`): the report, which said no error."""
    daemon = daemon_for(variant, request)

    def run(what: str, rounds: int) -> dict[str, Any]:
        rep = run_only(what, rounds, variant, remote_host, daemon)
        assert rep["errors"] == 0, "\n".join(rep["said"])
        return rep

    return run


def shim_fixed(reason: str) -> list[Any]:
    """kernel (passes: the test is right), then the shim's normal build. (Each of these was a
    defect of the shim, found by this file, and fixed: `reason` says what it was.)"""
    return ["kernel", "normal"]


FIRST_ADD = (
    "shim bug (wait.c, epoll_wait/sepoll_of): a thread that entered epoll_wait while the "
    "instance had no UTCP member is in the real epoll_wait; the first EPOLL_CTL_ADD of a UTCP "
    "socket puts the instance's eventfd (data = sepoll pointer | 1) into the kernel epoll and "
    "signals it, and that thread returns the shim's internal event to the application "
    "(thread_stress crashed with SIGSEGV on it before its workaround)"
)


@pytest.mark.parametrize("variant", shim_fixed(FIRST_ADD))
def test_a_thread_already_in_epoll_wait_sees_only_registered_events(only: Only) -> None:
    """An event loop thread waits on an empty epoll instance; another thread adds the first
    connection (writable at once): the waiter gets exactly that registration's data."""
    only("epoll-first-add", 5)


THREAD_FD = (
    "shim bug (wait.c, thread_efd): each thread that blocks once gets an eventfd (__thread "
    "t_efd) that nothing closes when the thread ends: one descriptor leaked per thread, so a "
    "thread-per-connection server runs out of descriptors"
)


@pytest.mark.parametrize("variant", shim_fixed(THREAD_FD))
def test_an_ended_thread_leaves_no_descriptor(only: Only) -> None:
    """30 short-lived threads, each blocked once in recv on one UTCP connection."""
    rep = only("churn", 30)
    assert rep["churn_threads"] == 30, rep
    assert rep["fd_end"] == rep["fd_base"], f"{rep['fd_end'] - rep['fd_base']} descriptors leaked"


SHUT_RD = (
    "shim/UTCP bug (utcp_c/src/sock/sock.c utcp_sk_shutdown; shim/sock.c shutdown): "
    "shutdown(SHUT_RD) sets shut_rd without marking the socket, so no notification reaches "
    "wait_notify/wait_wake_threads: a recv blocked in another thread (wait_block) sleeps on "
    "until something else happens in the process (here: SO_RCVTIMEO, 3 s), and epoll never "
    "reports the EPOLLIN|EPOLLRDHUP the kernel would; Linux wakes it at once with 0"
)


@pytest.mark.parametrize("variant", shim_fixed(SHUT_RD))
def test_shutdown_wakes_a_recv_blocked_in_another_thread(only: Only) -> None:
    """Rounds of SHUT_RD and SHUT_RDWR from one thread under another thread's blocked recv on
    an otherwise quiet process: the recv returns 0 within 1 s."""
    rep = only("shutdown", 2)
    assert rep["shut_ok"] == 2 and rep["shut_late"] == 0, "\n".join(rep["said"])


LISTENER_SHUT = (
    "shim bug (sock.c, shutdown): shutdown() of a UTCP listener goes to the kernel's shadow "
    "only (WITH_CONN takes connections only). The blocked accept() does fail with EINVAL (the "
    "shadow's wake-up), but the UTCP side keeps listening: the process stays in the listen "
    "group, the remote client connects, and the next accept() returns that connection "
    "(utcp_sk_shutdown's listener_stop is never called); Linux refuses it, accept() fails "
    "with EINVAL"
)

# From the remote host: does the listener still take connections? ("refused" on Linux)
PROBE = r"""
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    print("connected", flush=True)
except ConnectionRefusedError:
    print("refused", flush=True)
except OSError as e:
    print(f"error {e!r}", flush=True)
"""


@pytest.mark.parametrize("variant", shim_fixed(LISTENER_SHUT))
def test_shutdown_of_a_listener_stops_it_and_wakes_accept(
    remote_host: RemoteHost, variant: str, request: pytest.FixtureRequest
) -> None:
    """A thread blocks in accept(); another shuts the listener down for reading (how threaded
    servers stop their acceptors): accept() fails with EINVAL at once, the remote host's
    connection attempt is refused, a later accept() fails with EINVAL too."""
    rh = remote_host
    daemon = daemon_for(variant, request)
    p = subprocess.Popen(
        [*stress_argv(variant), "--listen", f"{rh.host_ip}:{PORT}",
         "--echo", f"{rh.remote_ip}:{ECHO_PORT}", "--only", "listener-shutdown"],
        env=shim_env(variant, daemon, policy_for(rh)),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_line(p, "shut", 30)
        probe = rh.python(PROBE, rh.host_ip, str(PORT), timeout=30).stdout.strip()
        _, err = p.communicate("done\n", timeout=60)
    finally:
        stop_process(p)
    check_clean(err)
    if daemon is not None:
        assert f"listener {rh.host_ip}:{PORT}: UTCP" in err, err[-3000:]
    errors = [ln for ln in err.splitlines() if ln.startswith("ERROR:")]
    assert probe == "refused" and not errors, "\n".join([f"remote connect: {probe}", *errors])
    assert p.returncode == 0, err[-3000:]
