"""The studies' tests share the project tests' fixtures (a short trained run, tiny datasets).

tests/ is not a package: its helpers are imported by name, so its folder goes on the path first.
"""

import pathlib
import sys

_TESTS = str(pathlib.Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
  sys.path.insert(0, _TESTS)

# pylint: disable=wrong-import-position,unused-import
from tests.conftest import frames_dataset, tiny_data, trained  # noqa: E402,F401
