"""Seeded impairment of one direction of a frame stream: the decision logic of the relay.

No sockets and no clock: a frame and the current time go in, frames with their send times come
out. The relay's socket loop (testbed.relay) drives it in real time, the unit tests in virtual time.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

ETH_HLEN = 14

# One emitted frame: (time at which it is due on the wire, frame bytes).
Emit = tuple[float, bytes]


@dataclass(frozen=True)
class ImpairConfig:
    """What the relay does to each direction (netem's parameters, brought by hand)."""

    loss: float = 0.0  # probability a frame is dropped
    dup: float = 0.0  # probability a frame is sent twice
    reorder: float = 0.0  # probability a frame is held back behind the next frames
    reorder_every: int = 0  # hold back every K-th frame (0: off)...
    reorder_gap: int = 0  # ...behind the next N frames (also the gap of `reorder`; 0 means 1)
    delay_ms: float = 0.0
    jitter_ms: float = 0.0  # uniform in [delay - jitter, delay + jitter]; may reorder, as netem
    corrupt: float = 0.0  # probability one byte past the Ethernet header is flipped
    hold_timeout_ms: float = 200.0  # a held frame leaves after this even if traffic stops
    seed: int = 1

    def __post_init__(self) -> None:
        for name in ("loss", "dup", "reorder", "corrupt"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability, got {p}")
        if self.reorder_every < 0 or self.reorder_gap < 0:
            raise ValueError("reorder_every and reorder_gap must be >= 0")
        if self.reorder_every == 1:
            raise ValueError("reorder_every=1 would hold every frame behind held frames")
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.hold_timeout_ms <= 0:
            raise ValueError("delay_ms, jitter_ms must be >= 0 and hold_timeout_ms > 0")

    @property
    def gap(self) -> int:
        return self.reorder_gap if self.reorder_gap > 0 else 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DirectionStats:
    """Counters of one direction. `forwarded` counts frames written to the wire (duplicates too)."""

    received: int = 0
    forwarded: int = 0
    dropped: int = 0  # lost on purpose (loss)
    duplicated: int = 0
    reordered: int = 0  # held back (by count or by probability)
    released_by_timeout: int = 0  # held frames that left on the hold timeout
    corrupted: int = 0
    delayed: int = 0  # frames that went through the timer heap
    oversize: int = 0  # longer than MTU + 14: offloads left on somewhere; dropped, see relay.py
    send_errors: int = 0
    kernel_drops: int = 0  # the relay's socket overflowed (PACKET_STATISTICS tp_drops)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DirectionStats:
        known = {k: int(v) for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class _Held:
    remaining: int  # further frames to let pass before this one leaves
    deadline: float
    frames: list[bytes] = field(default_factory=list)


class Impairer:
    """Impairs one direction. Each kind of impairment draws from its own seeded stream, so
    switching one on does not change the pattern of another (loss stays the same with or
    without delay, for instance)."""

    def __init__(
        self, cfg: ImpairConfig, direction: str = "a_to_b", stats: DirectionStats | None = None
    ) -> None:
        self.cfg = cfg
        self.stats = stats if stats is not None else DirectionStats()
        self._rng = {
            kind: random.Random(f"{cfg.seed}:{direction}:{kind}")
            for kind in ("loss", "dup", "reorder", "corrupt", "delay")
        }
        self._count = 0  # frames that survived loss: the basis of "every K-th frame"
        self._held: list[_Held] = []
        self._fixed_delay = cfg.delay_ms == 0 and cfg.jitter_ms == 0

    @property
    def held(self) -> int:
        return sum(len(h.frames) for h in self._held)

    def on_frame(self, frame: bytes, now: float) -> list[Emit]:
        """Decide the fate of one arriving frame; return what leaves, in order, with due times."""
        cfg, st, rng = self.cfg, self.stats, self._rng
        st.received += 1
        if cfg.loss and rng["loss"].random() < cfg.loss:
            st.dropped += 1
            return []
        if cfg.corrupt and rng["corrupt"].random() < cfg.corrupt and len(frame) > ETH_HLEN:
            frame = self._flip(frame)
            st.corrupted += 1
        copies = [frame]
        if cfg.dup and rng["dup"].random() < cfg.dup:
            copies.append(frame)
            st.duplicated += 1
        self._count += 1
        hold = (cfg.reorder_every > 0 and self._count % cfg.reorder_every == 0) or (
            cfg.reorder > 0 and rng["reorder"].random() < cfg.reorder
        )
        if hold:
            st.reordered += 1
            self._held.append(_Held(cfg.gap, now + cfg.hold_timeout_ms / 1000.0, copies))
            return []
        out = copies
        # Only frames that pass in arrival order count down the held ones; a held frame
        # leaves right after the N-th such frame, oldest held frame first.
        if self._held:
            keep: list[_Held] = []
            for h in self._held:
                h.remaining -= 1
                if h.remaining <= 0:
                    out = out + h.frames
                else:
                    keep.append(h)
            self._held = keep
        return [(self._due(now), f) for f in out]

    def next_deadline(self) -> float | None:
        """Earliest hold timeout, for the caller's poll timeout."""
        return min((h.deadline for h in self._held), default=None)

    def expire(self, now: float) -> list[Emit]:
        """Release held frames whose hold timeout has passed (a stream's tail never stalls)."""
        if not self._held:
            return []
        out: list[bytes] = []
        keep: list[_Held] = []
        for h in self._held:
            if h.deadline <= now:
                out.extend(h.frames)
                self.stats.released_by_timeout += 1
            else:
                keep.append(h)
        self._held = keep
        return [(self._due(now), f) for f in out]

    def _due(self, now: float) -> float:
        if self._fixed_delay:
            return now
        d = self.cfg.delay_ms
        if self.cfg.jitter_ms:
            d += self._rng["delay"].uniform(-self.cfg.jitter_ms, self.cfg.jitter_ms)
        self.stats.delayed += 1
        return now + max(0.0, d) / 1000.0

    def _flip(self, frame: bytes) -> bytes:
        rng = self._rng["corrupt"]
        pos = rng.randrange(ETH_HLEN, len(frame))
        b = bytearray(frame)
        b[pos] ^= rng.randrange(1, 256)  # never 0: the byte really changes
        return bytes(b)


def binomial_bounds(n: int, p: float, sigmas: float = 4.5) -> tuple[int, int]:
    """[lo, hi] for a Binomial(n, p) count at mean +- `sigmas` standard deviations."""
    mean = n * p
    sd = math.sqrt(n * p * (1.0 - p))
    return max(0, math.floor(mean - sigmas * sd)), min(n, math.ceil(mean + sigmas * sd))
