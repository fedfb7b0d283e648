"""docs/systemd.md's drop-in for a systemd-managed nginx under mstack-run: `systemd-analyze
verify` on a copy of Debian's nginx.service with the drop-in taken from the page (one place for
it), beside the packaged mstackd.service — the same approach as test_packaging's unit check.
Controls with the mstack-run path broken in ExecStart= and in ExecReload= must fail: the
drop-in's lines are the ones systemd would run. No root, no network."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from appkit import BIN, REPO

pytestmark = pytest.mark.unit

DOC = REPO / "docs" / "systemd.md"
NGINX_UNIT = Path("/lib/systemd/system/nginx.service")
MSTACKD_UNIT = REPO / "packaging" / "systemd" / "mstackd.service"
DROPIN_PATH = "/etc/systemd/system/nginx.service.d/mstack.conf"


def dropin_from_doc() -> str:
    """The first ```ini block after the line that names the drop-in's path."""
    text = DOC.read_text()
    at = text.index(f"`{DROPIN_PATH}`")
    m = re.search(r"```ini\n(.*?)```", text[at:], re.S)
    assert m, f"no ini block after {DROPIN_PATH} in {DOC}"
    return m.group(1)


def verify(d: Path, dropin: str) -> subprocess.CompletedProcess[str]:
    (d / "nginx.service.d").mkdir(parents=True, exist_ok=True)
    (d / "nginx.service.d" / "mstack.conf").write_text(dropin)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(d / "nginx.service")],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_dropin_in_the_doc_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    if not NGINX_UNIT.exists():
        pytest.skip(f"{NGINX_UNIT} is missing (Debian's nginx package)")
    dropin = dropin_from_doc()
    lines = dropin.splitlines()
    for want in ("Wants=mstackd.service", "After=mstackd.service", "ExecStart=", "ExecReload="):
        assert want in lines, want
    start = [ln for ln in lines if ln.startswith("ExecStart=/")]
    reload = [ln for ln in lines if ln.startswith("ExecReload=/")]
    assert len(start) == len(reload) == 1, lines
    debian = NGINX_UNIT.read_text()
    # Debian's command lines with mstack-run in front, nothing else changed
    for ours, key in ((start[0], "ExecStart="), (reload[0], "ExecReload=")):
        (theirs,) = [ln for ln in debian.splitlines() if ln.startswith(key)]
        assert ours == theirs.replace(key, f"{key}/usr/bin/mstack-run --app web -- "), ours
    shutil.copy(NGINX_UNIT, tmp_path / "nginx.service")
    (tmp_path / "mstackd.service").write_text(
        MSTACKD_UNIT.read_text().replace("/usr/sbin/mstackd", str(BIN / "mstackd"))
    )
    here = dropin.replace("/usr/bin/mstack-run", str(BIN / "mstack-run"))
    r = verify(tmp_path, here)
    assert r.returncode == 0 and "nginx" not in r.stderr, r.stderr
    for key in ("ExecStart=", "ExecReload="):
        missing = tmp_path / f"no-such-mstack-run-{key[:-1]}"
        broken = here.replace(f"{key}{BIN / 'mstack-run'}", f"{key}{missing}")
        assert broken != here
        r = verify(tmp_path, broken)
        assert r.returncode != 0 and str(missing) in r.stderr, (key, r.returncode, r.stderr)
