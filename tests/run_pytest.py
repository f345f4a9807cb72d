"""Runs pytest on the files given as arguments: the `main` of every Bazel py_test in BUILD."""

import sys

import pytest

if __name__ == "__main__":
  sys.exit(pytest.main(["-m", "slow or not slow", "-q"] + sys.argv[1:]))
