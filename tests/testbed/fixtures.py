"""Test bed fixtures (work in progress): remote_host, impaired_remote_host, bpf_pin_dir."""

__all__: list[str] = []
