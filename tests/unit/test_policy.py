"""The policy file: what it accepts, an error in every field rejected with file, line and field
named, the one-line form mstack-run hands the shim, and the shim's C parser agreeing with it
(and refusing anything else)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mstack.policy import PolicyError, compact, load, loads, select

pytestmark = pytest.mark.unit

BUILD = Path(os.environ.get("MSTACK_BUILD_DIR", Path(__file__).resolve().parents[2] / "build"))

GOOD = """\
# MultiStack policy
[apps.web]
exe = ["nginx"]
listen = ["0.0.0.0:80", "[::]:443", "198.18.0.1:8000-8010"]
connect = ["10.0.0.0/8:5432", "192.0.2.0/24:*"]

[apps.web.tcp]
congestion_control = "newreno"
sack = false
initial_window = 4

[apps.cache]
exe = ["redis-server"]
listen = ["*:6379"]
"""

GOOD_COMPACT = (
    "v=1;app=web;listen=0.0.0.0/0:80-80,0.0.0.0/0:443-443,198.18.0.1/32:8000-8010;"
    "connect=10.0.0.0/8:5432-5432,192.0.2.0/24:1-65535;cc=newreno;sack=0;ws=1;ts=1;iw=4;"
    "nodelay=0"
)


def test_good_policy() -> None:
    apps = loads(GOOD, "p.toml")
    assert set(apps) == {"web", "cache"}
    assert compact(apps["web"]) == GOOD_COMPACT
    assert select(apps, None, "/usr/sbin/nginx") is apps["web"]
    assert select(apps, "cache", "anything") is apps["cache"]
    assert select(apps, None, "curl") is None
    assert apps["cache"].tcp.congestion_control == "cubic"  # the defaults


@pytest.mark.parametrize(
    "text, where",
    [
        ("[apps.web\n", "p.toml:1: not valid TOML"),
        ("[other]\nx = 1\n", "p.toml:1: other: unknown table"),
        ('[apps."a b"]\nlisten = ["*:1"]\n', "p.toml:1: apps.a b: application names"),
        ('[apps.web]\nexe = "nginx"\nlisten = ["*:1"]\n', "p.toml:2: apps.web.exe: a list"),
        ('[apps.web]\nexe = ["/usr/sbin/nginx"]\nlisten = ["*:1"]\n', "p.toml:2: apps.web.exe"),
        (
            '[apps.a]\nexe = ["x"]\nlisten = ["*:1"]\n[apps.b]\nexe = ["x"]\nlisten = ["*:2"]\n',
            "p.toml:5: apps.b.exe: 'x' is also in apps.a",
        ),
        ('[apps.web]\nlisten = "*:80"\n', "p.toml:2: apps.web.listen: a list of strings"),
        ('[apps.web]\nlisten = ["*:80", "1.2.3:80"]\n', "p.toml:2: apps.web.listen[1]"),
        ('[apps.web]\nlisten = ["*:0"]\n', "p.toml:2: apps.web.listen[0]: port range"),
        ('[apps.web]\nlisten = ["*:90-80"]\n', "p.toml:2: apps.web.listen[0]: port range"),
        (
            '[apps.web]\nlisten = ["[::1]:80"]\n',
            "p.toml:2: apps.web.listen[0]: '[::1]:80': only [::]",
        ),
        ('[apps.web]\nconnect = ["10.0.0.1/8:80"]\n', "p.toml:2: apps.web.connect[0]"),
        ('[apps.web]\nconnect = ["10.0.0.0/8"]\n', "p.toml:2: apps.web.connect[0]"),
        ('[apps.web]\nlisten = ["*:1"]\nport = 3\n', "p.toml:3: apps.web.port: unknown field"),
        ('[apps.web]\nexe = ["x"]\n', "p.toml:1: apps.web: lists neither listen nor connect"),
        (
            '[apps.web]\nlisten = ["*:1"]\n[apps.web.tcp]\ncongestion_control = "bbr"\n',
            "p.toml:4: apps.web.tcp.congestion_control: one of newreno, cubic",
        ),
        (
            '[apps.web]\nlisten = ["*:1"]\n[apps.web.tcp]\nsack = 1\n',
            "p.toml:4: apps.web.tcp.sack: must be a bool",
        ),
        (
            '[apps.web]\nlisten = ["*:1"]\n[apps.web.tcp]\ninitial_window = 0\n',
            "p.toml:4: apps.web.tcp.initial_window: 1 to 64",
        ),
        (
            '[apps.web]\nlisten = ["*:1"]\n[apps.web.tcp]\nfast_open = true\n',
            "p.toml:4: apps.web.tcp.fast_open: unknown option",
        ),
        (
            '[apps.web]\nlisten = ["*:1"]\n\n[apps.web.tcp]\ntimestamps = "yes"\n',
            "p.toml:5: apps.web.tcp.timestamps: must be a bool",
        ),
    ],
)
def test_every_field_error_names_file_line_and_field(text: str, where: str) -> None:
    with pytest.raises(PolicyError) as ei:
        loads(text, "p.toml")
    assert str(ei.value).startswith(where), str(ei.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="No such file"):
        load(tmp_path / "none.toml")


def dump(variant: str, *args: str) -> subprocess.CompletedProcess[str]:
    exe = BUILD / ("asan" if variant == "asan" else "") / "tests" / "shim" / "policy_dump"
    if not exe.exists():
        pytest.fail(f"{exe} is missing: run make build")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=30)


VARIANTS = ["normal", "asan"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_shim_reads_what_mstack_run_writes(variant: str) -> None:
    for app in loads(GOOD, "p.toml").values():
        text = compact(app)
        out = dump(variant, text)
        assert out.returncode == 0 and out.stdout.strip() == text, out.stdout + out.stderr


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_shims_decisions(variant: str) -> None:
    out = dump(
        variant, GOOD_COMPACT,
        "listen", "0.0.0.0", "80",       # wildcard bind, wildcard entry: UTCP
        "listen", "198.18.0.1", "80",    # a specific address inside a wildcard entry
        "listen", "0.0.0.0", "8005",     # wildcard bind, only a specific entry: kernel
        "listen", "198.18.0.1", "8005",  # the specific entry
        "listen", "198.18.0.2", "8005",
        "connect", "10.9.8.7", "5432",
        "connect", "10.9.8.7", "5433",
        "connect", "192.0.2.200", "1",
        "connect", "11.0.0.1", "5432",
    )  # fmt: skip
    assert out.stdout.split() == ["1", "1", "0", "1", "0", "1", "0", "1", "0"]


BAD = [
    "",
    "v=2;" + GOOD_COMPACT[4:],
    GOOD_COMPACT + ";",
    GOOD_COMPACT + ";v=1",
    GOOD_COMPACT.replace("cc=newreno", "cc=bbr"),
    GOOD_COMPACT.replace("iw=4", "iw=65"),
    GOOD_COMPACT.replace("iw=4", "iw="),
    GOOD_COMPACT.replace("sack=0", "sack=2"),
    GOOD_COMPACT.replace(";nodelay=0", ""),
    GOOD_COMPACT.replace("app=web", "app="),
    GOOD_COMPACT.replace("app=web", "app=" + "x" * 33),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.1/0:80-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0/33:80-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0/0:80-79"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0/0:0-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0/0:80-65536"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0/0:80-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0.0/0:80-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "256.0.0.0/0:80-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0:80-80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80", "0.0.0.0/0:80"),
    GOOD_COMPACT.replace("0.0.0.0/0:80-80,", "0.0.0.0/0:80-80,,"),
    GOOD_COMPACT.replace("10.0.0.0/8:5432-5432", "10.0.0.0/8:5432-5432,"),
    GOOD_COMPACT.replace("listen=", "listen"),
    GOOD_COMPACT.replace("listen=", "lisen="),
    "listen="
    + ",".join(["1.2.3.4/32:1-1"] * 65)
    + GOOD_COMPACT[GOOD_COMPACT.index(";connect") :]
    + ";v=1;app=x",
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_shim_refuses_malformed_policies(variant: str) -> None:
    for text in BAD:
        out = dump(variant, text)
        assert out.returncode == 1 and out.stdout.startswith("error: "), (text, out.stdout)


def test_python_is_importable_without_a_build() -> None:
    # The policy module is pure Python: mstack-run works without the C build.
    out = subprocess.run([sys.executable, "-c", "import mstack.policy"], capture_output=True)
    assert out.returncode == 0
