"""The test bed's own guarantees: remote hosts that answer, unique names, offloads as design.md
section 3 wants them, and a teardown that really removes namespaces, links and processes.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from testbed.leakcheck import bpffs_mounted
from testbed.netns import (
    IFNAMSIZ,
    NAME_RE,
    ImpairedRemoteHost,
    RemoteHost,
    child_env,
    ethtool_features,
    impaired_remote_host_cm,
    link_exists,
    netns_list,
    remote_host_cm,
    run_id,
)
from testbed.ping import ping

pytestmark = pytest.mark.system

GSO_GRO = ("generic-segmentation-offload", "generic-receive-offload")


def _ping_from_remote(h: RemoteHost, dst: str) -> list[float | None]:
    cp = h.run([sys.executable, "-m", "testbed.ping", dst, "2"], env=child_env(), timeout=30)
    return list(json.loads(cp.stdout))


def test_ping_both_ways(remote_host: RemoteHost) -> None:
    h = remote_host
    assert all(r is not None for r in ping(h.remote_ip, 2)), "root -> remote"
    assert all(r is not None for r in _ping_from_remote(h, h.host_ip)), "remote -> root"


def test_addresses_and_attributes(remote_host: RemoteHost) -> None:
    h = remote_host
    net = ipaddress.ip_network(h.subnet)
    assert net.subnet_of(ipaddress.ip_network("198.18.0.0/15"))  # type: ignore[arg-type]
    assert (h.host_ip, h.remote_ip) == (str(net[1]), str(net[2]))
    assert h.prefix_len == 24
    assert h.host_ifindex > 0 and h.remote_ifindex > 0
    link = json.loads(
        subprocess.run(
            ["ip", "-j", "link", "show", h.host_if], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert (link["ifindex"], link["address"]) == (h.host_ifindex, h.host_mac)
    remote = json.loads(h.run(["ip", "-j", "link", "show", h.remote_if]).stdout)[0]
    assert (remote["ifindex"], remote["address"]) == (h.remote_ifindex, h.remote_mac)
    # python() runs in the namespace: the remote interface is visible there, not here.
    cp = h.python("import socket, sys; print(socket.if_nametoindex(sys.argv[1]))", h.remote_if)
    assert int(cp.stdout) == h.remote_ifindex


def test_names_unique_and_recognisable(
    remote_host_factory: Callable[..., RemoteHost],
) -> None:
    hosts = [remote_host_factory() for _ in range(3)]
    names = [n for h in hosts for n in (h.ns, h.host_if, h.remote_if)]
    assert len(set(names)) == len(names)
    assert len({h.subnet for h in hosts}) == 3
    for n in names:
        m = NAME_RE.match(n)
        assert m is not None and m.group(1) == run_id(), n
    for h in hosts:
        assert len(h.host_if) <= IFNAMSIZ and len(h.remote_if) <= IFNAMSIZ
    # Parallel remote hosts do not disturb each other.
    for h in hosts:
        assert ping(h.remote_ip, 1)[0] is not None


def test_remote_end_offloads_ipv6_and_neighbours(remote_host: RemoteHost) -> None:
    h = remote_host
    assert ethtool_features(h.remote_if, h.ns)["tx-checksumming"] is False
    assert Path(f"/proc/sys/net/ipv6/conf/{h.host_if}/disable_ipv6").read_text().strip() == "1"
    assert h.run(["cat", f"/proc/sys/net/ipv6/conf/{h.remote_if}/disable_ipv6"]).stdout == "1\n"
    root_neigh = subprocess.run(
        ["ip", "neigh", "show", "dev", h.host_if], capture_output=True, text=True, check=True
    ).stdout
    assert f"{h.remote_ip} lladdr {h.remote_mac} PERMANENT" in root_neigh
    remote_neigh = h.run(["ip", "neigh", "show", "dev", h.remote_if]).stdout
    assert f"{h.host_ip} lladdr {h.host_mac} PERMANENT" in remote_neigh


def test_remote_gro_option(remote_host_factory: Callable[..., RemoteHost]) -> None:
    on, off = remote_host_factory(remote_gro=True), remote_host_factory(remote_gro=False)
    assert ethtool_features(on.remote_if, on.ns)["generic-receive-offload"] is True
    assert ethtool_features(off.remote_if, off.ns)["generic-receive-offload"] is False
    assert ping(on.remote_ip, 1)[0] is not None


def test_teardown_removes_everything_even_on_failure() -> None:
    procs: list[subprocess.Popen[str]] = []
    seen: list[RemoteHost] = []
    with pytest.raises(RuntimeError, match="boom"), remote_host_cm() as h:
        seen.append(h)
        procs.append(h.python_popen("import time; print('READY'); time.sleep(60)", ready="READY"))
        procs.append(h.popen(["sleep", "60"]))
        assert h.ns in netns_list() and link_exists(h.host_if)
        raise RuntimeError("boom")
    h = seen[0]
    assert h.ns not in netns_list()
    assert not link_exists(h.host_if)
    for p in procs:
        assert p.returncode is not None  # killed and reaped


def test_impaired_teardown_and_offloads() -> None:
    with impaired_remote_host_cm(loss=0.0) as h:
        relay = h.relay
        assert relay is not None and relay.poll() is None
        for dev, ns in (
            (h.host_if, None),
            (h.mid_host_if, h.mid_ns),
            (h.mid_remote_if, h.mid_ns),
            (h.remote_if, h.ns),
        ):
            f = ethtool_features(dev, ns)
            off = ("tx-checksumming", "tcp-segmentation-offload", *GSO_GRO)
            assert not any(f[k] for k in off), (dev, {k: f[k] for k in off})
        addrs = h.run(["ip", "-4", "-o", "addr", "show"]).stdout
        assert h.remote_ip in addrs
        mid = subprocess.run(
            ["ip", "-n", h.mid_ns, "-4", "-o", "addr", "show"], capture_output=True, text=True
        ).stdout
        assert "inet " not in mid.replace("inet 127.0.0.1/8", "")  # the relay has no address
        assert ping(h.remote_ip, 2)[-1] is not None
    assert relay.returncode is not None
    assert h.ns not in netns_list() and h.mid_ns not in netns_list()
    assert not link_exists(h.host_if)


def test_relay_counts_oversize_frames_when_offloads_are_on(
    impaired_remote_host: Callable[..., ImpairedRemoteHost],
) -> None:
    h = impaired_remote_host()
    srv = h.python_popen(
        "import socket,sys\n"
        "s=socket.socket(); s.bind((sys.argv[1], 9001)); s.listen(1); print('READY', flush=True)\n"
        "s.settimeout(20); c,_=s.accept(); c.settimeout(5)\n"
        "try:\n  c.recv(1 << 20)\nexcept OSError:\n  pass\n",
        h.remote_ip,
        ready="READY",
    )
    with socket.create_connection((h.remote_ip, 9001), timeout=10) as c:
        # Undo the fixture's work on the sending side once connected: TCP now hands the veth
        # 64 KB super-frames.
        subprocess.run(
            ["ethtool", "-K", h.host_if, "tx", "on", "tso", "on", "gso", "on"],
            check=True,
            capture_output=True,
        )
        c.settimeout(5)
        c.send(b"x" * 200_000)  # no sendall: the super-frames never arrive, nor their ACKs
        deadline = time.monotonic() + 10
        while h.relay_stats().to_remote.oversize == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    srv.kill()
    assert h.relay_stats(stop=True).to_remote.oversize > 0


def test_bpf_pin_dir(bpf_pin_dir: Path) -> None:
    assert bpffs_mounted()
    assert bpf_pin_dir.parent == Path("/sys/fs/bpf") and bpf_pin_dir.is_dir()
    m = NAME_RE.match(bpf_pin_dir.name)
    assert m is not None and m.group(1) == run_id()
    subprocess.run(
        [
            *("bpftool", "map", "create", str(bpf_pin_dir / "m"), "type", "array"),
            *("key", "4", "value", "4", "entries", "1", "name", "mstpin"),
        ],
        check=True,
        capture_output=True,
    )
    assert (bpf_pin_dir / "m").exists()


def test_bad_impairment_rejected_before_anything_is_built() -> None:
    before = netns_list()
    with pytest.raises(ValueError), impaired_remote_host_cm(loss=2.0):
        pass
    assert netns_list() == before
    with pytest.raises(TypeError), impaired_remote_host_cm(no_such_knob=1):
        pass
