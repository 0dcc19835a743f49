"""The sandbox stack: what `panda-deploy demo`, the end-to-end tests and the benchmarks run the operator against."""
