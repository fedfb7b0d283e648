"""The XDP egress fast path on the test bed with real traffic: UTCP (utcp-xdpcat) sends to the
remote host's kernel, sha256-checked. With GRO on at the remote end the probe turns the fast
path on and frames leave through the NIC DEVMAP (egress counter `fast`); without it the probe
keeps it off and TC carries everything; GRO turned off mid-transfer costs a bounded number of
frames, TCP recovers and the next probe turns it back on when GRO returns; a neighbour's new MAC
reaches the next-hop cache."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute

from mstack_testkit import Mstackd
from mstackd import libbpf
from mstackd.abi import consts
from mstackd.nexthop import NUD_PERMANENT
from mstackd.switch import ip_be
from system.test_utcp_xdp import ECHO_AFTER_EOF, payload, sha, utcp_sends, xdpcat
from testbed.netns import RemoteHost, sh

pytestmark = [pytest.mark.system, pytest.mark.long]

__all__ = ["payload"]  # the fixture, imported for these tests
N = 4_000_000


def fast(d: Mstackd) -> dict[str, Any]:
    return d.admin("status")["nics"][0]["fast_path"]  # type: ignore[no-any-return]


def egress(d: Mstackd) -> dict[str, int]:
    return d.admin("stats")["egress"]  # type: ignore[no-any-return]


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def set_gro(h: RemoteHost, on: bool) -> None:
    sh(["ethtool", "-K", h.remote_if, "gro", "on" if on else "off"], netns=h.ns)


@contextmanager
def pinned(d: Mstackd, name: str, key: str, value: str, percpu: bool = False) -> Iterator[Any]:
    """One of the switch's pinned maps, read without asking the daemon."""
    m = libbpf.BpfMap.open_pinned(d.bpf_dir / name, key, value, percpu=percpu)
    try:
        yield m
    finally:
        m.close()


def cached_mac(d: Mstackd, h: RemoteHost) -> bytes | None:
    with pinned(d, "nexthops", "struct mstack_nh_key", "struct mstack_nexthop") as m:
        v: Any = m.lookup({"ifindex": h.host_ifindex, "daddr": ip_be(h.remote_ip)})
        return None if v is None else bytes(list(v.dmac))


def egress_pinned(d: Mstackd) -> dict[str, int]:
    """The egress counters read from the pins (no daemon to ask)."""
    with pinned(d, "egress_stats", "__u32", "__u64", percpu=True) as m:
        vals: Any = m.lookup(consts.MSTACK_EG_FAST)
        return {"fast": int(sum(vals))}


def wait_for_nexthop(d: Mstackd, timeout: float) -> None:
    wait_for(lambda: fast(d)["nexthops"] == 1, timeout, "the next hop in the cache")


BedFactory = Callable[[bool], tuple[RemoteHost, Mstackd]]


@pytest.fixture
def bed(
    remote_host_factory: Callable[..., RemoteHost], mstackd_factory: Callable[..., Mstackd]
) -> BedFactory:
    """The test bed with GRO on or off at the remote end, and mstackd on it with the fast path
    asked for (it is off by default)."""

    def make(remote_gro: bool) -> tuple[RemoteHost, Mstackd]:
        h = remote_host_factory(remote_gro=remote_gro)
        return h, mstackd_factory(h, "--egress-fast-path")

    return make


def counted_sends(
    d: Mstackd, h: RemoteHost, payload: Path, n: int, tmp_path: Path
) -> tuple[dict[str, int], dict[str, int]]:
    """UTCP sends n bytes to the remote: the egress counters before and after."""
    before = egress(d)
    utcp_sends(d, h, payload, n, tmp_path)
    return before, egress(d)


@contextmanager
def a_port(d: Mstackd) -> Iterator[int]:
    """A port held open by a client: the ifindex of its host end."""
    with d.client() as c:
        c.hello()
        _, fds, _ = c.port_open()
        for fd in fds:
            os.close(fd)
        (port,) = d.admin("ports")
        yield socket.if_nametoindex(port["host_if"])


@contextmanager
def echo_transfer(
    d: Mstackd, h: RemoteHost, data: bytes, tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """utcp-xdpcat to the remote's echo-after-EOF server, fed `data` by the caller through
    stdin; after the block, the remote got all of it and echoed it back intact."""
    srv = h.python_popen(ECHO_AFTER_EOF, h.remote_ip, "9001", ready="ready")
    out = tmp_path / "echoed"
    with open(out, "wb") as fout:
        p = xdpcat(d, h.host_ip, "connect", h.remote_ip, "9001", stdin=subprocess.PIPE,
                   stdout=fout)  # fmt: skip
        assert p.stdin is not None
        yield p
    srv_out, _ = srv.communicate(timeout=60)
    n = len(data)
    assert int(srv_out.split()[-2]) == n and sha(out, n) == hashlib.sha256(data).hexdigest()


def test_fast_path_carries_utcp_to_a_remote_with_gro(
    bed: BedFactory, payload: Path, tmp_path: Path
) -> None:
    h, d = bed(True)
    assert fast(d)["on"], fast(d)
    # The first frames to a destination miss the cache and take TC until mstackd resolves it
    # (within a tick); every frame after that takes the fast path.
    first = egress(d)
    utcp_sends(d, h, payload, N // 8, tmp_path)
    assert egress(d)["nh_miss"] > first["nh_miss"]
    wait_for_nexthop(d, 2)
    before, after = counted_sends(d, h, payload, N, tmp_path)
    sent = after["sent"] - before["sent"]
    by_fast = after["fast"] - before["fast"]
    assert after["nh_miss"] == before["nh_miss"]
    assert by_fast == sent and sent > N // 1500, (before, after)
    fp = fast(d)
    assert fp["on"] and fp["xmit_drops"] == 0 and fp["nexthops"] == 1, fp
    assert cached_mac(d, h) == bytes.fromhex(h.remote_mac.replace(":", ""))
    text = d.ctl("stats").stdout
    assert f"fast path {h.host_if}: on" in text and "fast=" in text


def test_off_by_default_and_switched_on_at_run_time(
    remote_host_factory: Callable[..., RemoteHost],
    mstackd_factory: Callable[..., Mstackd],
    payload: Path,
    tmp_path: Path,
) -> None:
    h = remote_host_factory(remote_gro=True)
    d = mstackd_factory(h)  # no --egress-fast-path, no config: the default
    fp = fast(d)
    assert not fp["on"] and fp["probes"] == 0, fp  # not even tried
    with a_port(d) as host_ifindex:
        assert libbpf.xdp_query_id(host_ifindex) == 0  # the TC path exactly as without it
        before, after = counted_sends(d, h, payload, N // 4, tmp_path)
        assert after["fast"] == before["fast"] and after["nh_miss"] == before["nh_miss"]
        assert after["sent"] > before["sent"]
        # Available all the same: an operator (or a benchmark) turns it on at run time.
        assert "fast path on" in d.ctl("fast-path", "on").stdout
        assert fast(d)["on"] and libbpf.xdp_query_id(host_ifindex) != 0


def test_without_remote_gro_the_probe_keeps_it_off(
    bed: BedFactory, payload: Path, tmp_path: Path
) -> None:
    h, d = bed(False)
    fp = fast(d)
    # The kernel's veth refuses the probe (its peer has neither XDP nor GRO).
    assert not fp["on"] and fp["probes"] >= 1 and fp["xmit_sent"] == 0, fp
    assert fp["xmit_drops"] + fp["redirect_errs"] >= 1, fp
    before, after = counted_sends(d, h, payload, N, tmp_path)
    assert after["fast"] == before["fast"] and after["sent"] - before["sent"] > N // 1500
    # The only frames lost are the probes': live traffic never tried the DEVMAP.
    fp = fast(d)
    assert fp["xmit_drops"] + fp["redirect_errs"] == fp["probes"], fp
    # With no NIC to use it, no port carries the XDP program: the TC path is as without it.
    with a_port(d) as host_ifindex:
        assert libbpf.xdp_query_id(host_ifindex) == 0


def test_remote_gro_off_mid_transfer_falls_back_and_comes_back(
    bed: BedFactory, payload: Path, tmp_path: Path
) -> None:
    h, d = bed(True)
    assert fast(d)["on"]
    n = 8_000_000
    data = payload.read_bytes()[:n]
    t0 = time.monotonic()
    with echo_transfer(d, h, data, tmp_path) as p:
        assert p.stdin is not None
        chunk = n // 16
        for i in range(16):  # a transfer that is still going when GRO goes off
            p.stdin.write(data[i * chunk : (i + 1) * chunk])
            p.stdin.flush()
            time.sleep(0.05)
            if i == 3:
                wait_for(lambda: egress(d)["fast"] > 500, 10, "the fast path to carry it")
                set_gro(h, False)
        p.stdin.close()
        assert p.wait(120) == 0
    elapsed = time.monotonic() - t0
    fp = fast(d)
    assert not fp["on"] and fp["turned_off"] >= 1, fp
    # Lost to the switch-over: at most a DEVMAP flush's worth of frames per CPU.
    lost = fp["xmit_drops"] + fp["redirect_errs"]
    assert 1 <= lost <= 16 * 2, fp
    assert elapsed < 16 * 0.05 + 10, f"{elapsed:.1f} s: a stall"
    print(f"GRO off mid-transfer: {lost} frames lost, {elapsed:.2f} s for {n} B")
    set_gro(h, True)
    wait_for(lambda: bool(fast(d)["on"]), 10, "the re-probe to turn the fast path on")
    before, after = counted_sends(d, h, payload, N // 4, tmp_path)
    assert after["fast"] > before["fast"]


def test_a_changed_neighbour_mac_is_followed(
    bed: BedFactory, payload: Path, tmp_path: Path
) -> None:
    h, d = bed(True)
    utcp_sends(d, h, payload, N // 4, tmp_path)
    wait_for_nexthop(d, 2)
    assert cached_mac(d, h) == bytes.fromhex(h.remote_mac.replace(":", ""))
    new = "02:5a:5a:00:00:01"
    sh(["ip", "link", "set", h.remote_if, "address", new], netns=h.ns)
    with IPRoute() as ipr:  # what the kernel does on the remote's gratuitous ARP
        ipr.neigh("replace", dst=h.remote_ip, lladdr=new, ifindex=h.host_ifindex,
                  state=NUD_PERMANENT, family=socket.AF_INET)  # fmt: skip
    wait_for(lambda: cached_mac(d, h) == bytes.fromhex("025a5a000001"), 5, "the new MAC")
    before, after = counted_sends(d, h, payload, N // 4, tmp_path)
    assert after["fast"] - before["fast"] == after["sent"] - before["sent"] > 0
    with IPRoute() as ipr:  # neighbour gone: the entry leaves the cache, TC resolves it
        ipr.neigh("del", dst=h.remote_ip, ifindex=h.host_ifindex, family=socket.AF_INET)
    wait_for(lambda: cached_mac(d, h) is None, 5, "the entry to go")


def test_the_fast_path_outlives_the_daemon_and_a_restart_adopts_it(
    bed: BedFactory, payload: Path, tmp_path: Path
) -> None:
    h, d = bed(True)
    n = 6_000_000
    data = payload.read_bytes()[:n]
    q = n // 4
    with echo_transfer(d, h, data, tmp_path) as p:
        assert p.stdin is not None
        p.stdin.write(data[:q])  # its first frames make mstackd cache the next hop
        p.stdin.flush()
        wait_for_nexthop(d, 10)
        p.stdin.write(data[q : 2 * q])
        p.stdin.flush()
        wait_for(lambda: egress(d)["fast"] > 500, 10, "the fast path to carry it")
        d.kill()
        before = egress_pinned(d)
        p.stdin.write(data[2 * q : 3 * q])  # no daemon: XDP, maps and DEVMAP carry on
        p.stdin.flush()
        wait_for(lambda: egress_pinned(d)["fast"] > before["fast"] + 500, 10, "frames")
        d.restart()
        wait_for(lambda: bool(fast(d)["on"]), 10, "the restarted daemon's probe")
        assert len(d.admin("ports")) == 1  # adopted
        before = egress(d)
        p.stdin.write(data[3 * q :])
        p.stdin.close()
        assert p.wait(120) == 0
    assert egress(d)["fast"] > before["fast"]
    assert libbpf.xdp_query_id(d.admin("status")["nics"][0]["ifindex"]) != 0


def test_mstackctl_turns_the_fast_path_off_and_on(
    bed: BedFactory, payload: Path, tmp_path: Path
) -> None:
    h, d = bed(True)
    with a_port(d) as host_ifindex:  # a port, so that off has an XDP program to take off
        assert libbpf.xdp_query_id(host_ifindex) != 0
        assert "fast path off" in d.ctl("fast-path", "off").stdout
        assert not fast(d)["on"] and libbpf.xdp_query_id(host_ifindex) == 0
        time.sleep(0.5)  # no probe turns it on again
        assert not fast(d)["on"]
        before, after = counted_sends(d, h, payload, N // 4, tmp_path)
        assert after["fast"] == before["fast"] and after["nh_miss"] == before["nh_miss"]
        assert after["sent"] > before["sent"]
        assert "fast path on" in d.ctl("fast-path", "on").stdout
        assert fast(d)["on"] and libbpf.xdp_query_id(host_ifindex) != 0
        utcp_sends(d, h, payload, N // 4, tmp_path)  # its misses fill the cache
        wait_for_nexthop(d, 2)
        utcp_sends(d, h, payload, N // 4, tmp_path)
        assert egress(d)["fast"] > after["fast"]
