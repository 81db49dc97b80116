"""The benchmark (figures in bench/README.md): ``python -m bench`` (``--quick`` for a smoke run)."""
