"""coder-jobs benchmarks: run them with `./dev bench` (python -m benchmarks)."""
