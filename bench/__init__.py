"""The MultiStack benchmark harness (`make bench`)."""
