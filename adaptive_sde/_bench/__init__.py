"""The benchmarks behind ``adaptive-sde bench`` and the problems they share with the tests."""
