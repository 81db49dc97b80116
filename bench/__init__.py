"""The benchmark of SPEC §9: ``python -m bench`` (``--quick`` for a smoke run)."""
