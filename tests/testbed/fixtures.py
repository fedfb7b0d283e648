"""Test bed fixtures: remote_host, remote_host_factory, impaired_remote_host, bpf_pin_dir.

Thin pytest wrappers around the context managers of testbed.netns (design.md section 7); every
one tears down in its finalizer, pass or fail. Mark tests that use them `system`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testbed.leakcheck import bpffs_mounted
from testbed.netns import (
    ImpairedRemoteHost,
    RemoteHost,
    TestbedError,
    impaired_remote_host_cm,
    remote_host_cm,
    unique_name,
    unpin_tree,
)

__all__ = [
    "bpf_pin_dir",
    "impaired_remote_host",
    "remote_host",
    "remote_host_factory",
    "testbed_name",
]

BPFFS = Path("/sys/fs/bpf")


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the network test bed needs root")


@pytest.fixture
def remote_host() -> Iterator[RemoteHost]:
    """A remote host: its own namespace, a veth to the root namespace, a /24 of 198.18.0.0/15."""
    _need_root()
    with remote_host_cm() as h:
        yield h


@pytest.fixture
def remote_host_factory() -> Iterator[Callable[..., RemoteHost]]:
    """make(remote_gro=None) -> RemoteHost, as many as a test needs; all torn down after it."""
    _need_root()
    with contextlib.ExitStack() as stack:

        def make(*, remote_gro: bool | None = None) -> RemoteHost:
            return stack.enter_context(remote_host_cm(remote_gro=remote_gro))

        yield make


@pytest.fixture
def impaired_remote_host() -> Iterator[Callable[..., ImpairedRemoteHost]]:
    """Factory: make(loss=0.0, dup=0.0, reorder=0.0, reorder_every=0, reorder_gap=0,
    delay_ms=0, jitter_ms=0, corrupt=0.0, hold_timeout_ms=200, seed=1, direction="both")
    returns a remote host behind an impairing L2 relay (same attributes as remote_host, plus
    mid_ns and relay_stats())."""
    _need_root()
    with contextlib.ExitStack() as stack:

        def make(**impairment: Any) -> ImpairedRemoteHost:
            return stack.enter_context(impaired_remote_host_cm(**impairment))

        yield make


@pytest.fixture
def testbed_name() -> Callable[[str], str]:
    """testbed_name("x") -> a run-unique name (≤ 15 chars) the leak check knows as this run's."""
    return unique_name


@pytest.fixture
def bpf_pin_dir() -> Iterator[Path]:
    """A fresh directory under bpffs (/sys/fs/bpf/mst<run>-<n>-bpf), unpinned and removed after."""
    _need_root()
    if not bpffs_mounted():
        # The leak check mounts bpffs at session start; without it there is nowhere to pin.
        raise TestbedError(f"{BPFFS} is not a bpffs mount (is testbed.leakcheck loaded?)")
    path = BPFFS / unique_name("-bpf")
    path.mkdir()
    try:
        yield path
    finally:
        unpin_tree(path)
