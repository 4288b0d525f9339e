"""The openeas data-plane benchmark (`python3 -m bench`); see bench/main.py and docs/benchmarks.md."""
