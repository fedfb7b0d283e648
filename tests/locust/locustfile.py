"""Locust users for the load acceptance of issue 6 (tests/system/test_apps_load.py): GETs of the
docroot's files, each body checked against its sha256 (a wrong body is a failure, not a
success). The test hands the files and digests over in MSTACK_LOCUST_FILES (JSON
{path: [sha256, weight]}) and reads the counts this file writes to MSTACK_LOCUST_REPORT."""

from __future__ import annotations

import hashlib
import json
import os
import random
from typing import Any

from locust import FastHttpUser, between, events, task

FILES: dict[str, list[Any]] = json.loads(os.environ.get("MSTACK_LOCUST_FILES", "{}"))
PATHS = sorted(FILES)
WEIGHTS = [int(FILES[p][1]) for p in PATHS]
COUNTS = {"verified": 0, "bad_body": 0, "bad_status": 0}


class Visitor(FastHttpUser):
    wait_time = between(0.2, 0.6)

    @task
    def get_file(self) -> None:
        path = random.choices(PATHS, WEIGHTS)[0]
        with self.client.get(path, name=path, catch_response=True) as resp:
            if resp.status_code != 200:
                COUNTS["bad_status"] += 1
                resp.failure(f"status {resp.status_code}")
                return
            body = resp.content or b""
            if hashlib.sha256(body).hexdigest() != FILES[path][0]:
                COUNTS["bad_body"] += 1
                resp.failure(f"body of {len(body)} bytes does not match {path}'s sha256")
                return
            COUNTS["verified"] += 1
            resp.success()


@events.quitting.add_listener
def write_report(environment: Any, **_: Any) -> None:
    path = os.environ.get("MSTACK_LOCUST_REPORT")
    if path:
        total = environment.stats.total
        report = {**COUNTS, "requests": total.num_requests, "failures": total.num_failures}
        with open(path, "w") as f:
            json.dump(report, f)
