"""UTCP's libFuzzer targets (utcp_c/fuzz) for a bounded time each, starting from the seed corpus
kept in the repository (utcp_c/fuzz/corpus/<target>/): fuzz_stack (raw frames into a stack),
fuzz_peer (a scripted peer that keeps sequence numbers near the stack's, reaching every state),
fuzz_wire (the parsers) and fuzz_migrate (blobs of connections moved from another stack, then
driven). 50 s in all in `make test`; MSTACK_FULL=1 runs each for 10 minutes
(MSTACK_FUZZ_SECONDS=N overrides both). A crash, a leak, a sanitizer report or a hung input fails
the test, naming the reproducer libFuzzer wrote (kept under <build>/fuzz/artifacts/) and the
command that replays it. The targets are built here with their Makefile (clang + libFuzzer:
scripts/install-deps.sh installs clang and libclang-rt-14-dev); a missing compiler fails."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ctests import BUILD, REPO

pytestmark = [pytest.mark.unit, pytest.mark.long]

FUZZ_DIR = REPO / "utcp_c" / "fuzz"
CORPUS = FUZZ_DIR / "corpus"
# Inputs that found a bug not fixed yet, named <target>-<what>: replayed below as expected
# failures, kept out of the corpus (where they would fail every run) until the fix lands; then
# moved to regressions/<target>/, which every run starts from beside the seeds (mkseeds
# rewrites corpus/, never regressions/).
REPRODUCERS = FUZZ_DIR / "reproducers"
REGRESSIONS = FUZZ_DIR / "regressions"
FULL = os.environ.get("MSTACK_FULL") == "1"
# Seconds per target: the frame-input targets get most of the budget (50 s in all).
SECONDS = {"fuzz_stack": 17, "fuzz_peer": 17, "fuzz_wire": 8, "fuzz_migrate": 8}
FULL_SECONDS = 600
PER_INPUT_TIMEOUT = 10  # seconds; an input running longer is reported as a hang
TARGETS = sorted(p.stem for p in FUZZ_DIR.glob("fuzz_*.c"))


def seconds_for(target: str) -> int:
    override = os.environ.get("MSTACK_FUZZ_SECONDS")
    if override:
        return int(override)
    return FULL_SECONDS if FULL else SECONDS.get(target, 10)


@pytest.fixture(scope="module")
def fuzzers() -> Path:
    """The targets, built (or found up to date) with utcp_c/fuzz/Makefile."""
    if shutil.which(os.environ.get("FUZZ_CC", "clang")) is None:
        pytest.fail("clang is missing: run scripts/install-deps.sh (clang, libclang-rt-14-dev)")
    out = subprocess.run(
        ["make", "-C", str(FUZZ_DIR), f"BUILD={BUILD}", "all"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if out.returncode != 0:
        hint = ""
        if "libclang_rt.fuzzer" in out.stderr or "fuzzer" in out.stderr:
            hint = "\n(libFuzzer missing? scripts/install-deps.sh installs libclang-rt-14-dev)"
        pytest.fail(
            f"building the fuzz targets failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}{hint}"
        )
    return BUILD / "fuzz"


def test_the_seed_corpus_is_there() -> None:
    """A few dozen meaningful inputs per target (regenerate: make -C utcp_c/fuzz seeds)."""
    assert TARGETS == ["fuzz_migrate", "fuzz_peer", "fuzz_stack", "fuzz_wire"], TARGETS
    for t in TARGETS:
        files = [p for p in (CORPUS / t).iterdir() if p.is_file()]
        assert len(files) >= 10 and all(p.stat().st_size > 0 for p in files), (t, len(files))


def _stats(log: str) -> dict[str, str]:
    """The last coverage line and libFuzzer's final stats, for the test's output."""
    out = dict(re.findall(r"^stat::(\w+):\s+(\S+)", log, re.M))
    cov = re.findall(r"cov: (\d+) ft: (\d+) corp: (\d+)/", log)
    if cov:
        out["cov"], out["ft"], out["corpus"] = cov[-1]
    return out


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_runs_clean(target: str, fuzzers: Path, tmp_path: Path) -> None:
    exe = fuzzers / target
    assert exe.exists(), f"{exe} missing after make -C utcp_c/fuzz"
    seconds = seconds_for(target)
    work = tmp_path / "corpus"  # new inputs land here; the repository's seeds stay as they are
    work.mkdir()
    artifacts = fuzzers / "artifacts"
    artifacts.mkdir(exist_ok=True)
    argv = [
        str(exe), f"-max_total_time={seconds}", f"-timeout={PER_INPUT_TIMEOUT}",
        "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={artifacts}/{target}-",
        str(work), str(CORPUS / target),
    ]  # fmt: skip
    if (REGRESSIONS / target).is_dir():
        argv.append(str(REGRESSIONS / target))
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"}  # fmt: skip
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 300, env=env, cwd=tmp_path
    )
    log = proc.stdout + proc.stderr
    st = _stats(log)
    print(
        f"{target}: {seconds} s, {st.get('number_of_executed_units', '?')} execs "
        f"({st.get('average_exec_per_sec', '?')}/s), cov {st.get('cov', '?')} ft "
        f"{st.get('ft', '?')}, corpus {st.get('corpus', '?')} inputs, "
        f"{st.get('new_units_added', '?')} new"
    )
    written = re.findall(r"Test unit written to (\S+)", log)
    if proc.returncode != 0 or written:
        where = written[-1] if written else "(libFuzzer wrote no reproducer)"
        report = "\n".join(
            line for line in log.splitlines() if not re.match(r"#\d+\s+(NEW|REDUCE|pulse)", line)
        )
        pytest.fail(
            f"{target} failed (exit {proc.returncode}); reproducer: {where}\n"
            f"replay: {exe} {where}\n--- libFuzzer output (progress lines left out) ---\n"
            f"{report[-6000:]}",
            pytrace=False,
        )
    assert int(st.get("number_of_executed_units", "0")) > 0, log[-3000:]


OPEN = sorted(REPRODUCERS.glob("fuzz_*")) if REPRODUCERS.is_dir() else []


@pytest.mark.parametrize("path", OPEN or [None], ids=[p.name for p in OPEN] or ["none-open"])
def test_known_reproducers(path: Path | None, fuzzers: Path) -> None:
    """Replays each reproducer of a known, still open bug once: an expected failure while the
    bug is there (named in the output), a pass once it is fixed — then move the input to
    regressions/<target>/ so that it guards against the bug's return."""
    if path is None:
        return  # no open bug has a reproducer
    target = path.name.split("-", 1)[0]
    proc = subprocess.run(
        [str(fuzzers / target), f"-timeout={PER_INPUT_TIMEOUT}", "-runs=1", str(path)],
        capture_output=True, text=True, timeout=PER_INPUT_TIMEOUT + 120,
    )  # fmt: skip
    if proc.returncode != 0:
        summary = [ln for ln in proc.stderr.splitlines() if "ERROR" in ln or "SUMMARY" in ln]
        pytest.xfail(f"{path.name} still fails: {' / '.join(summary[:2])}")
    print(f"{path.name} passes now: move it to {REGRESSIONS / target}")
