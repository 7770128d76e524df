"""Benchmarks and checks run by hand (see README.md here); a package, so that tests import
``benchmarks.reference_ftcp``."""
