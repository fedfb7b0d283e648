"""Issue 6's acceptance with Debian's nginx, reached from the remote host of a test bed: static
files of 0 B to 10 MB with sendfile on and off, over keep-alive and one connection per file,
and a proxy_pass location whose upstream (`python3 -m http.server`) runs on the kernel in the
remote namespace — its connections listed for UTCP in one variant, left on the kernel in the
other. Every body sha256-checked. Each scenario runs on the kernel (it must pass: the test
works) and under mstack-run (the proof that UTCP carried it, or a skip while the shim has no
UTCP) — appkit.py says how."""

from __future__ import annotations

import pytest

from appkit import (
    SIZES,
    UPSTREAM_PORT,
    WEB_PORT,
    Launch,
    Proof,
    Watch,
    by_size,
    check_fetches,
    held_connection,
    launch,  # noqa: F401
    make_docroot,
    remote_curl,
    remote_http_server,
    running_nginx,
)

pytestmark = pytest.mark.system


@pytest.mark.parametrize("sendfile", ["sendfile_on", "sendfile_off"])
def test_static_files(launch: Launch, sendfile: str) -> None:  # noqa: F811
    rh = launch.host
    watches = [Watch("nginx's listener", rh.remote_ip, utcp=launch.shim, local_port=WEB_PORT)]
    with (
        running_nginx(launch, sendfile=sendfile == "sendfile_on") as ng,
        Proof(launch, watches, ng.logs) as proof,
    ):
        for keepalive in (True, False):
            got = remote_curl(rh, ng.url(""), by_size(ng.files), launch.dir / "out", keepalive)
            check_fetches(got, ng.files, keepalive)
        with held_connection(rh, ng.ip, ng.port, "/64k.bin"):
            proof.sample_held()
    proof.verify()


@pytest.mark.parametrize(
    ("launch", "upstream_listed"),
    [("kernel", False), ("shim", False), ("shim", True)],
    ids=["kernel", "shim-upstream_on_kernel", "shim-upstream_on_utcp"],
    indirect=["launch"],
)
def test_proxy_pass(launch: Launch, upstream_listed: bool) -> None:  # noqa: F811
    """nginx's upstream connections are outgoing connections of this host: listed in the
    policy's connect entries they go to UTCP, unlisted they must stay on the kernel."""
    rh = launch.host
    upstream = f"{rh.remote_ip}:{UPSTREAM_PORT}"
    up_root = launch.dir / "upstream"
    files = make_docroot(up_root, SIZES, seed=7)
    connect = [f"{rh.remote_ip}/32:{UPSTREAM_PORT}"] if upstream_listed else []
    watches = [
        Watch("nginx's listener", rh.remote_ip, utcp=launch.shim, local_port=WEB_PORT),
        Watch(
            "nginx's upstream connections",
            rh.remote_ip,
            utcp=upstream_listed,
            remote_port=UPSTREAM_PORT,
        ),
    ]
    with (
        remote_http_server(rh, up_root),
        running_nginx(launch, upstream=upstream, connect=connect) as ng,
        Proof(launch, watches, ng.logs) as proof,
    ):
        for keepalive in (True, False):
            paths = [f"/up{p}" for p in by_size(files)]
            got = remote_curl(rh, ng.url(""), paths, launch.dir / "out", keepalive)
            check_fetches(got, files, keepalive, prefix="/up")
        # After this response the worker keeps its upstream connection (keepalive 8): both
        # the client's and the upstream connection are open while ss looks.
        with held_connection(rh, ng.ip, ng.port, "/up/64k.bin"):
            proof.sample_held()
    proof.verify()
