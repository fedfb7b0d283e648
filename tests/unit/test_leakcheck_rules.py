"""Unit tests of the leak check's comparison rules (testbed.leakcheck.compare), on hand-made
snapshots: what counts as this run's leak and what belongs to someone else.
"""

from __future__ import annotations

import pytest

from testbed import leakcheck
from testbed.leakcheck import LinkState, Snapshot, compare

pytestmark = pytest.mark.unit

RID = "abcd"


@pytest.fixture(autouse=True)
def _this_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leakcheck, "run_id", lambda: RID)
    monkeypatch.delenv(leakcheck.IGNORE_ENV, raising=False)


def link(ifindex: int, xdp: set[int] | None = None, tc: set[str] | None = None,
         peer: str | None = None) -> LinkState:  # fmt: skip
    return LinkState(ifindex, frozenset(xdp or ()), frozenset(tc or ()), peer)


def snap(
    netns: set[str] | None = None,
    links: dict[str, LinkState] | None = None,
    pins: set[str] | None = None,
    procs: dict[tuple[int, float], str] | None = None,
) -> Snapshot:
    base = {"lo": link(1), "eth0": link(4), "ifb0": link(2), "ifb1": link(3)}
    return Snapshot(set(netns or ()), {**base, **(links or {})}, set(pins or ()), procs or {})


def test_nothing_new_nothing_leaked() -> None:
    s = snap(netns={"old"}, links={"old0": link(9)}, pins={"x/"})
    assert compare(s, snap(netns={"old"}, links={"old0": link(9)}, pins={"x/"})) == []


def test_new_objects_of_this_run_and_unnamed_ones_leak() -> None:
    after = snap(
        netns={f"mst{RID}-1rns", "plain"},
        links={f"mst{RID}-1h": link(10), "veth9": link(11)},
        pins={f"mst{RID}-2-bpf/", f"mst{RID}-2-bpf/map"},
        procs={(123, 1.0): "pid 123 sleep 60"},
    )
    leaks = compare(snap(), after)
    assert f"network namespace mst{RID}-1rns" in leaks
    assert "network namespace plain" in leaks
    assert f"link mst{RID}-1h ifindex 10" in leaks
    assert "link veth9 ifindex 11" in leaks
    # A leaked pin directory is one leak, not one per pin inside.
    assert [x for x in leaks if x.startswith("BPF pin")] == [f"BPF pin /sys/fs/bpf/mst{RID}-2-bpf"]
    assert "child process pid 123 sleep 60" in leaks
    assert len(leaks) == 6


def test_other_runs_objects_are_theirs() -> None:
    after = snap(
        netns={"mst1234-1rns"},
        links={
            "mst1234-1h": link(10, xdp={5}),
            "mstp7": link(11, peer="mst1234-3pns"),  # a port veth into another run's netns
        },
        pins={"mst1234-2-bpf/", "mst1234-2-bpf/m"},
    )
    assert compare(snap(), after) == []


def test_programs_on_pre_existing_links() -> None:
    before = snap(links={f"mst{RID}-1h": link(10), "mst1234-1h": link(12)})
    after = snap(
        links={
            f"mst{RID}-1h": link(10, xdp={7}, tc={"qdisc clsact"}),
            "mst1234-1h": link(12, xdp={8}),  # another run's link: its business
            "eth0": link(4, tc={"qdisc clsact", "ingress bpf pref 1 x prog 9"}),
        }
    )
    leaks = compare(before, after)
    assert leaks == [
        "TC on pre-existing link eth0: ingress bpf pref 1 x prog 9",
        "TC on pre-existing link eth0: qdisc clsact",
        f"XDP program [7] on pre-existing link mst{RID}-1h",
        f"TC on pre-existing link mst{RID}-1h: qdisc clsact",
    ]


def test_recreated_link_with_same_name_is_new() -> None:
    leaks = compare(snap(links={"veth0": link(10)}), snap(links={"veth0": link(11)}))
    assert leaks == ["link veth0 ifindex 11"]


def test_iproute2_empty_dirs_are_not_pins() -> None:
    # `ip link set ... xdp obj` leaves tc/globals (and symlinks, never listed) in bpffs.
    assert compare(snap(), snap(pins={"tc/", "tc/globals/"})) == []
    assert compare(snap(), snap(pins={"tc/", "tc/globals/", "tc/globals/m"})) == [
        "BPF pin /sys/fs/bpf/tc"
    ]


def test_ignore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(leakcheck.IGNORE_ENV, "manual*, other")
    after = snap(netns={"manual1", "other", "kept"})
    assert compare(snap(), after) == ["network namespace kept"]


def test_reserved_ports_left_behind_are_a_leak() -> None:
    before, after = snap(), snap()
    after.reserved_ports = frozenset(range(61000, 61064))
    leaks = compare(before, after)
    assert leaks == ["64 port(s) left in ip_local_reserved_ports (61000..61063)"]
