"""Run work inside a network namespace: a worker thread that entered the namespace once (setns
moves only the calling thread) and runs submitted calls there. An XSK binds to an ifindex of
its own namespace and XDP attach speaks netlink in the current one, so everything mstackd does
to a port's app end goes through the ports namespace's executor."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pyroute2 import netns as pr_netns

T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def ensure_netns(name: str) -> bool:
    """Create the named namespace (bind-mounted under /run/netns) unless it exists; True if
    it was created."""
    if os.path.exists(netns_path(name)):
        return False
    pr_netns.create(name)
    return True


def remove_netns(name: str) -> None:
    if os.path.exists(netns_path(name)):
        pr_netns.remove(name)


class NetnsExecutor:
    """One thread living in namespace `name`; `run(fn, ...)` executes fn there and returns its
    result (exceptions propagate)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pool = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"netns-{name}", initializer=self._enter
        )
        # Fail now, not at first use, if the namespace cannot be entered.
        self.run(lambda: None)

    def _enter(self) -> None:
        pr_netns.setns(self.name, flags=0)

    def run(self, fn: Callable[..., T], *args: object, **kw: object) -> T:
        return self._pool.submit(fn, *args, **kw).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
