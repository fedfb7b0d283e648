"""Lease bookkeeping against ip_local_reserved_ports, on stand-in files: blocks are aligned,
skip what is reserved, and are removed port by port even when the kernel has merged them with
a neighbour's range."""

from __future__ import annotations

from pathlib import Path

import pytest

from mstackd.leases import LeaseError, LeaseManager, format_ranges, parse_ranges
from mstackd.switch import BindKey

pytestmark = pytest.mark.unit


class FakeSwitch:
    def __init__(self) -> None:
        self.bound: set[BindKey] = set()

    def bind(self, key: BindKey, kind: str, *, group: int = 0, port_id: int = 0) -> None:
        self.bound.add(key)

    def unbind(self, key: BindKey) -> bool:
        self.bound.discard(key)
        return True


@pytest.fixture
def mgr(tmp_path: Path) -> LeaseManager:
    (tmp_path / "reserved").write_text("61000-61063\n")
    (tmp_path / "range").write_text("60000\t61199\n")
    return LeaseManager(FakeSwitch(), tmp_path / "reserved", tmp_path / "range")


def test_blocks_are_aligned_from_the_top_and_skip_reserved_ports(mgr: LeaseManager) -> None:
    a = mgr.lease(1, "127.0.0.1", 64)
    assert (a.first, a.last) == (61120, 61183)  # 61184.. would pass the range's end
    b = mgr.lease(1, "127.0.0.1", 64)
    assert (b.first, b.last) == (61056, 61119) or b.first < 61000  # 61000-61063 is taken
    assert not (61000 <= b.first <= 61063 or 61000 <= b.last <= 61063)
    assert len(mgr.switch.bound) == 128  # type: ignore[attr-defined]
    mgr.close()
    assert parse_ranges(mgr.reserved.read_text()) == [(61000, 61063)]
    assert mgr.switch.bound == set()  # type: ignore[attr-defined]


def test_release_after_the_kernel_merged_ranges(mgr: LeaseManager) -> None:
    a = mgr.lease(1, "127.0.0.1", 64)
    # The kernel reads back adjacent ranges merged: ours and a neighbour's become one.
    assert a.first == 61120
    mgr.reserved.write_text(format_ranges([(61000, 61063), (61100, 61183)]) + "\n")
    mgr.release(a.id)
    # Our ports are gone; the neighbour's 61100-61119 and the rest stay.
    assert parse_ranges(mgr.reserved.read_text()) == [(61000, 61063), (61100, 61119)]


def test_bad_counts_and_exhaustion(mgr: LeaseManager) -> None:
    for n in (-1, 4097):
        with pytest.raises(LeaseError):
            mgr.lease(1, "127.0.0.1", n)
    with pytest.raises(LeaseError, match="no free block"):
        mgr.lease(1, "127.0.0.1", 4096)
