"""Issue 6's load acceptance: locust, headless, in the remote namespace, against Debian's nginx on
this host — 200 users for 60 s with zero failures and every body verified (locustfile checks
each body's sha256) as the full form (MSTACK_FULL=1), 50 users for 15 s in `make test`. On the
kernel (must pass) and under mstack-run (UTCP proof, or a skip while the shim has no UTCP).
Locust runs as a process of the test bed host, stopped by pid: none outlives the test."""

from __future__ import annotations

import json

import pytest

from appkit import (
    BIN,
    FULL,
    REPO,
    WEB_PORT,
    Launch,
    Proof,
    Watch,
    held_connection,
    launch,  # noqa: F401
    running_nginx,
)
from testbed.netns import child_env, stop_process

pytestmark = [pytest.mark.system, pytest.mark.long]

LOCUSTFILE = REPO / "tests" / "locust" / "locustfile.py"
USERS, SECONDS = (200, 60) if FULL else (50, 15)
WEIGHTS = {"/0.bin": 1, "/1.bin": 1, "/1k.bin": 4, "/64k.bin": 3, "/1m.bin": 1}


def test_locust_against_nginx(launch: Launch) -> None:  # noqa: F811
    locust = BIN / "locust"
    assert locust.exists(), f"{locust} is missing: `make deps` installs the test extras"
    rh = launch.host
    watches = [Watch("nginx's listener", rh.remote_ip, utcp=launch.shim, local_port=WEB_PORT)]
    report = launch.dir / "locust-report.json"
    log = launch.dir / "locust.log"
    with running_nginx(launch) as ng, Proof(launch, watches, ng.logs) as proof:
        files = {p: [ng.files[p], w] for p, w in WEIGHTS.items()}
        env = child_env({"MSTACK_LOCUST_FILES": json.dumps(files),
                         "MSTACK_LOCUST_REPORT": str(report)})  # fmt: skip
        argv = [str(locust), "-f", str(LOCUSTFILE), "--headless", "-H", ng.url(""),
                "-u", str(USERS), "-r", str(max(1, USERS // 4)), "-t", f"{SECONDS}s",
                "--stop-timeout", "10", "--only-summary", "--loglevel", "WARNING",
                "--exit-code-on-error", "1"]  # fmt: skip
        with open(log, "wb") as out:
            p = rh.popen(argv, cwd=launch.dir, env=env, stdout=out, stderr=out)
        try:
            ng.wait_logged(USERS)  # the load is on
            with held_connection(rh, ng.ip, ng.port, "/1k.bin"):
                proof.sample_held()
            rc = p.wait(timeout=SECONDS + 120)
        finally:
            stop_process(p)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-4000:]
    got = json.loads(report.read_text())
    print(f"locust: {got}")
    assert got["failures"] == 0 and got["bad_body"] == 0 and got["bad_status"] == 0, got
    assert got["requests"] >= USERS and got["verified"] == got["requests"], got
    proof.verify()
