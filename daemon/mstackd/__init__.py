"""mstackd: the MultiStack control plane (ports, namespace registry, BPF switch, statistics)."""

__version__ = "0.1.0"
