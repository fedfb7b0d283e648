"""A listener's queued connections move to another process of its listen group when it closes
(issue 6: `nginx -s reload` under load loses no request; docs/shim.md, "Reload").

Deterministic form of what the reload test meets by chance: a process under the shim listens,
forks a second one that shares the listener, and waits on it alone while remote clients connect
and send their requests — every connection is queued in the first process's stack, none
accepted. Then the second process starts waiting (joins the group) and the first closes its
listener: the connections must move (mstackd's HANDOFF / IMPORT, UTCP's migrate out and in)
and be served by the second process, byte-exact, none reset. Without another member they are
reset, and the shim says why."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest

from mstack_testkit import Mstackd
from system.test_shim_utcp import VARIANTS, finish, py_under_shim, shim_env
from testbed.netns import RemoteHost, stop_process, wait_line

pytestmark = pytest.mark.system

PORT = 8481
NCONN = 24

# argv: ip port nconn taker(0/1). The parent queues, the child (when taker) takes over.
SERVER = r"""
import os, select, socket, sys
ip, port, n, taker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((ip, port))
ls.listen(128)
r, w = os.pipe()
pid = os.fork() if taker else -1
if pid == 0:
    os.close(w)
    os.read(r, 1)
    select.select([ls], [], [], 0)  # waiting on it: this process joins the group
    print("joined", flush=True)
    for _ in range(n):
        c, _ = ls.accept()
        c.settimeout(20)
        line = b""
        while not line.endswith(b"\n"):
            d = c.recv(100)
            if not d:
                break
            line += d
        c.sendall(b"ok " + line + str(os.getpid()).encode() + b"\n")
        c.close()
    print("served", n, flush=True)
    sys.exit(0)  # exit(): the shim delivers what is still unacknowledged
select.select([ls], [], [], 0)  # the parent joins (a fork made it leave): it alone gets the SYNs
print("ready", flush=True)
sys.stdin.readline()            # the clients' requests are queued here, never accepted
if taker:
    os.write(w, b"g")
    sys.stdin.readline()        # the child has joined
ls.close()                      # the queue moves to the child, or is reset
print("closed", flush=True)
if taker:
    _, st = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(st))
"""

# Remote: n connections, each sends "req i\n"; after "go" on stdin reads each answer.
CLIENTS = r"""
import json, socket, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection((ip, port), timeout=10)
    s.sendall(f"req {i}\n".encode())
    socks.append(s)
print("sent", flush=True)
sys.stdin.readline()
answers, errors = {}, []
for i, s in enumerate(socks):
    try:
        buf = b""
        while True:
            d = s.recv(100)
            if not d:
                break
            buf += d
        head, _, pid = buf.decode().rstrip("\n").rpartition("\n")
        if head != f"ok req {i}":
            errors.append(f"conn {i}: {buf!r}")
        answers[pid] = answers.get(pid, 0) + 1
    except Exception as e:
        errors.append(f"conn {i}: {e!r}")
print("answers", json.dumps(answers), flush=True)
print("errors", errors, flush=True)
"""


@pytest.fixture(params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def queued(mstackd: Mstackd, rh: RemoteHost) -> subprocess.Popen[str]:
    cli = rh.python_popen(
        CLIENTS,
        rh.host_ip,
        str(PORT),
        str(NCONN),
        ready="sent",
        ready_timeout=30,
        stdin=subprocess.PIPE,
    )
    time.sleep(0.5)  # the last requests' segments reach the queue
    return cli


def tell(p: subprocess.Popen[str], line: str = "go") -> None:
    assert p.stdin is not None
    p.stdin.write(line + "\n")
    p.stdin.flush()


def test_queued_connections_move_to_the_other_member(
    remote_host: RemoteHost, mstackd: Mstackd, variant: str
) -> None:
    rh = remote_host
    policy = f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}"]\n'
    srv = py_under_shim(SERVER, rh.host_ip, PORT, NCONN, 1, env=shim_env(variant, mstackd, policy))
    cli = None
    try:
        wait_line(srv, "ready", 30)
        cli = queued(mstackd, rh)
        tell(srv)
        wait_line(srv, "joined", 30)
        tell(srv)
        tell(cli)
        out, err = cli.communicate(timeout=60)
        assert "errors []" in out, out + err
        answers = json.loads(out.split("answers ", 1)[1].split("\n", 1)[0])
        assert list(answers.values()) == [NCONN] and str(srv.pid) not in answers, out
        log = finish(srv, timeout=30)
        assert f"served {NCONN}" in log
        assert f"{NCONN} queued connection(s) moved to port" in log, log
        assert "took over" in log, log
        ho = handoff_stats(mstackd)
        assert ho["handoffs"] >= 1 and ho["flows_moved"] == NCONN, ho
        # the adopting process's first segments took the flows over: nothing was dropped
        egress = switch_stats(mstackd)["egress"]
        assert egress.get("flow_clash", 0) == 0, egress
        assert "hand-offs:" in mstackd.ctl("stats").stdout
    except BaseException:
        srv.kill()
        sout, serr = srv.communicate(timeout=10)
        print(f"server stdout:\n{sout}\nserver stderr:\n{serr}\nmstackd:\n{mstackd.log()}")
        raise
    finally:
        stop_process(srv)
        if cli:
            stop_process(cli)


def test_without_another_member_the_queue_is_reset_and_said(
    remote_host: RemoteHost, mstackd: Mstackd
) -> None:
    rh = remote_host
    policy = f'[apps.t]\nlisten = ["{rh.host_ip}:{PORT}"]\n'
    srv = py_under_shim(SERVER, rh.host_ip, PORT, NCONN, 0, env=shim_env("normal", mstackd, policy))
    cli = None
    try:
        wait_line(srv, "ready", 30)
        cli = queued(mstackd, rh)
        tell(srv)
        tell(cli)
        out, err = cli.communicate(timeout=60)
        assert "ConnectionResetError" in out, out + err
        log = finish(srv, timeout=30)
        assert "could not move" in log or "the rest are reset" in log, log
    finally:
        stop_process(srv)
        if cli:
            stop_process(cli)


def switch_stats(mstackd: Mstackd) -> dict[str, Any]:
    cp = mstackd.ctl("stats", "--json")
    assert cp.returncode == 0, cp.stderr
    return dict(json.loads(cp.stdout))


def handoff_stats(mstackd: Mstackd) -> dict[str, int]:
    return dict(switch_stats(mstackd)["handoff"])
