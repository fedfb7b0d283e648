"""mstackd.toml: defaults, overrides, and a clear error naming the key for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from mstackd.config import Config, ConfigError, load

pytestmark = pytest.mark.unit


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load(tmp_path / "none.toml") == Config()


def test_values_are_read(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text('[daemon]\nattach = ["eth1"]\nmode = "generic"\numem_frames = 1024\n')
    cfg = load(p)
    assert (cfg.attach, cfg.mode, cfg.umem_frames) == (["eth1"], "generic", 1024)
    assert not cfg.egress_fast_path  # off unless asked for
    p.write_text("[daemon]\negress_fast_path = true\n")
    assert load(p).egress_fast_path


@pytest.mark.parametrize(
    "text, words",
    [
        ("[daemon\n", "m.toml"),
        ("[deamon]\n", "unknown table"),
        ("[daemon]\nattch = []\n", "daemon.attch"),
        ('[daemon]\nmode = "fast"\n', "daemon.mode"),
        ("[daemon]\numem_frames = 8\n", "daemon.umem_frames"),
        ('[daemon]\numem_frames = "8"\n', "wrong type"),
        ("[daemon]\nattach = [1]\n", "daemon.attach"),
        ("[daemon]\nmax_ports_per_process = true\n", "wrong type"),
        ("[daemon]\negress_fast_path = 1\n", "wrong type"),
        ('[daemon]\negress_fast_path = "yes"\n', "wrong type"),
    ],
)
def test_mistakes_name_the_key(tmp_path: Path, text: str, words: str) -> None:
    p = tmp_path / "m.toml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=words):
        load(p)
