"""MultiStack admin side: mstackctl, mstack-run and the policy file."""

__version__ = "0.1.0"
