"""The network test bed: namespaces, veth pairs, an impairing L2 relay and a leak check.

Fixtures live in `testbed.fixtures`, the session leak check in `testbed.leakcheck`; both are
pulled into every test by tests/conftest.py. Mark tests that use them `system` (they need root).

Fixtures (design.md section 7):

* `remote_host` -> RemoteHost: namespace `ns` joined to the root namespace by a veth
  (`host_if` in root, `remote_if` in `ns`), a /24 of 198.18.0.0/15 (`host_ip` .1,
  `remote_ip` .2, `prefix_len`, `subnet`), `host_ifindex`, `remote_ifindex`, `host_mac`,
  `remote_mac`; IPv6 off, TX checksum offload off at the remote end, permanent neighbours.
  Methods: run(argv), popen(argv), python(code, *args), python_popen(code, *args,
  ready="READY") — all inside `ns`; processes are stopped by pid and reaped at teardown.
* `remote_host_factory` -> make(remote_gro=None): several remote hosts per test.
* `impaired_remote_host` -> make(loss=, dup=, reorder=, reorder_every=, reorder_gap=,
  delay_ms=, jitter_ms=, corrupt=, hold_timeout_ms=200, seed=1, direction="both"):
  an ImpairedRemoteHost (same attributes, plus `mid_ns` and relay_stats(stop=False)), whose
  veth is cut by testbed.relay in a middle namespace; TSO/GSO/GRO/TX csum off around it.
* `bpf_pin_dir` -> Path: a fresh directory under /sys/fs/bpf, unpinned at teardown.
* `testbed_name` -> unique_name(suffix): a run-unique name the leak check attributes to
  this run; give every object a test creates outside these fixtures such a name.

Outside pytest (scripts, demos): the context managers testbed.netns.remote_host_cm() and
impaired_remote_host_cm(**impairment). Names are `mst<run id>-<n><suffix>`; objects of runs
that died (a SIGKILLed pytest) are listed by `python -m testbed.netns` and removed with
`--cleanup-stale`.
"""
