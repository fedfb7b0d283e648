"""Session-level leak check (work in progress)."""

__all__: list[str] = []
