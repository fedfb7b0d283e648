"""Unit tests of the relay's impairment logic (testbed.impair), in virtual time, no privileges."""

from __future__ import annotations

import pytest

from testbed.impair import DirectionStats, ImpairConfig, Impairer, binomial_bounds

pytestmark = pytest.mark.unit


def frame(i: int, size: int = 64) -> bytes:
    """A frame whose first payload bytes carry its number."""
    return b"\xaa" * 14 + i.to_bytes(4, "big") + bytes(size - 18)


def num(f: bytes) -> int:
    return int.from_bytes(f[14:18], "big")


def feed(imp: Impairer, n: int, t0: float = 0.0, dt: float = 0.001) -> list[tuple[float, int]]:
    """Feed frames 1..n at dt apart; then let every hold timeout pass."""
    out: list[tuple[float, int]] = []
    t = t0
    for i in range(1, n + 1):
        out += [(due, num(f)) for due, f in imp.on_frame(frame(i), t)]
        t += dt
    out += [(due, num(f)) for due, f in imp.expire(t + 10.0)]
    return out


def test_no_impairment_passes_everything_in_order_now() -> None:
    imp = Impairer(ImpairConfig())
    out = feed(imp, 100)
    assert [n for _, n in out] == list(range(1, 101))
    assert all(due == pytest.approx(0.001 * (n - 1)) for due, n in out)
    assert imp.stats == DirectionStats(received=100)


def test_reorder_every_k_gap_n_exact_order() -> None:
    imp = Impairer(ImpairConfig(reorder_every=10, reorder_gap=3))
    got = [n for _, n in feed(imp, 50)]
    expected = [
        *(1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 10),
        *(14, 15, 16, 17, 18, 19, 21, 22, 23, 20),
        *(24, 25, 26, 27, 28, 29, 31, 32, 33, 30),
        *(34, 35, 36, 37, 38, 39, 41, 42, 43, 40),
        *(44, 45, 46, 47, 48, 49, 50),
    ]
    # Frame 50 is held behind frames that never come: the hold timeout releases it last.
    assert got == expected
    assert imp.stats.reordered == 5
    assert imp.stats.released_by_timeout == 1


def test_hold_timeout_releases_a_stream_tail() -> None:
    imp = Impairer(ImpairConfig(reorder_every=3, reorder_gap=5, hold_timeout_ms=50))
    assert imp.on_frame(frame(1), 0.0) and imp.on_frame(frame(2), 0.0)
    assert imp.on_frame(frame(3), 0.0) == []
    assert imp.next_deadline() == pytest.approx(0.05)
    assert imp.expire(0.049) == []
    out = imp.expire(0.05)
    assert [num(f) for _, f in out] == [3]
    assert imp.next_deadline() is None


def test_loss_matches_seed_and_rate() -> None:
    cfg = ImpairConfig(loss=0.1, seed=7)
    a = [n for _, n in feed(Impairer(cfg), 2000)]
    b = [n for _, n in feed(Impairer(cfg), 2000)]
    assert a == b  # reproducible
    lost = 2000 - len(a)
    lo, hi = binomial_bounds(2000, 0.1)
    assert lo <= lost <= hi
    c = [n for _, n in feed(Impairer(ImpairConfig(loss=0.1, seed=8)), 2000)]
    assert c != a  # the seed matters


def test_loss_pattern_independent_of_other_impairments() -> None:
    plain = feed(Impairer(ImpairConfig(loss=0.2, seed=3)), 500)
    with_delay = feed(Impairer(ImpairConfig(loss=0.2, seed=3, delay_ms=5, jitter_ms=1)), 500)
    assert sorted(n for _, n in plain) == sorted(n for _, n in with_delay)


def test_directions_draw_from_different_streams() -> None:
    a = feed(Impairer(ImpairConfig(loss=0.3), "a_to_b"), 300)
    b = feed(Impairer(ImpairConfig(loss=0.3), "b_to_a"), 300)
    assert a != b


def test_duplication_rate_and_adjacency() -> None:
    imp = Impairer(ImpairConfig(dup=0.05, seed=2))
    got = [n for _, n in feed(imp, 4000)]
    dups = len(got) - 4000
    assert dups == imp.stats.duplicated
    lo, hi = binomial_bounds(4000, 0.05)
    assert lo <= dups <= hi
    # A duplicate follows its original immediately.
    assert sorted(set(got)) == list(range(1, 4001))
    for i in range(1, len(got)):
        if got[i] == got[i - 1]:
            continue
        assert got[i] == got[i - 1] + 1


def test_corruption_flips_exactly_one_byte_past_ethernet_header() -> None:
    imp = Impairer(ImpairConfig(corrupt=0.2, seed=5))
    changed = 0
    for i in range(1, 1001):
        original = frame(i, 100)
        [(_, f)] = imp.on_frame(original, 0.0)
        diff = [k for k in range(len(f)) if f[k] != original[k]]
        assert len(diff) <= 1
        if diff:
            assert diff[0] >= 14
            changed += 1
    assert changed == imp.stats.corrupted
    lo, hi = binomial_bounds(1000, 0.2)
    assert lo <= changed <= hi


def test_delay_and_jitter_bounds() -> None:
    imp = Impairer(ImpairConfig(delay_ms=20, jitter_ms=5, seed=4))
    dues = [due - t for t in (0.0, 1.0, 2.0) for due, _ in imp.on_frame(frame(1), t)]
    imp2 = Impairer(ImpairConfig(delay_ms=20, jitter_ms=5, seed=4))
    lats = []
    for i in range(500):
        [(due, _)] = imp2.on_frame(frame(i), float(i))
        lats.append(due - i)
    assert all(0.015 - 1e-9 <= x <= 0.025 + 1e-9 for x in lats + dues)
    assert max(lats) - min(lats) > 0.008  # the jitter is really applied
    assert imp2.stats.delayed == 500


def test_fixed_delay_keeps_order() -> None:
    imp = Impairer(ImpairConfig(delay_ms=10))
    out = feed(imp, 20)
    assert [n for _, n in out] == list(range(1, 21))
    assert all(due == pytest.approx(0.001 * (n - 1) + 0.010) for due, n in out)


def test_probabilistic_reorder_holds_behind_next_frame() -> None:
    imp = Impairer(ImpairConfig(reorder=0.25, seed=9))
    got = [n for _, n in feed(imp, 1000)]
    assert sorted(got) == list(range(1, 1001))
    moved = sum(1 for i in range(1, len(got)) if got[i] < got[i - 1])
    assert moved > 0
    lo, hi = binomial_bounds(1000, 0.25)
    assert lo <= imp.stats.reordered <= hi


def test_held_frame_keeps_its_duplicate() -> None:
    imp = Impairer(ImpairConfig(dup=1.0, reorder_every=2, reorder_gap=1))
    got = [n for _, n in feed(imp, 4)]
    assert got == [1, 1, 3, 3, 2, 2, 4, 4]


@pytest.mark.parametrize(
    "kw",
    [{"loss": 1.5}, {"dup": -0.1}, {"reorder_every": 1}, {"delay_ms": -1}, {"hold_timeout_ms": 0}],
)
def test_config_rejects_nonsense(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ImpairConfig(**kw)  # type: ignore[arg-type]


def test_binomial_bounds() -> None:
    lo, hi = binomial_bounds(2000, 0.1)
    assert (lo, hi) == (139, 261)  # 200 +- 4.5 * 13.42
