"""The documentation cannot drift: every command line in README.md and docs/ names an existing
command (`python -m daml_tf...` or an installed `daml-...`) and only flags that command defines.

Each command's flags are read from its own `--helpfull`, in a child process, as a user would see
them."""

import concurrent.futures
import pathlib
import re
import subprocess
import sys

import pytest

from daml_tf import commands

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))
_COMMAND = re.compile(r"(?:python3? -m (daml_tf(?:\.\w+)+)|\b(daml-[a-z-]+)\b)")
_FLAG = re.compile(r"(?<![\w-])--(\w+)")
_DEFINED = re.compile(r"^\s+--(?:\[no\])?(\w+):", re.M)


def _command_lines():
  """(document, module, the command line with continuations joined) of every command."""
  found = []
  for document in DOCUMENTS:
    text = re.sub(r"\\\n\s*", " ", document.read_text())
    for line in text.splitlines():
      for match in _COMMAND.finditer(line):
        module = match.group(1) or commands.COMMANDS.get(match.group(2))
        rest = line[match.end():]
        # Up to the next command on the same line (a pipeline, `;`, `&&`) or a table cell.
        rest = re.split(r"\||;|&&|python3? -m |\bdaml-[a-z-]+\b", rest)[0]
        # After a lone `--`, the arguments belong to the program it starts (bench_workers).
        rest = re.split(r"\s--(?:\s|$)", rest)[0]
        found.append((document.relative_to(REPO).as_posix(), module or match.group(2), rest))
  return found


def _defined_flags(module):
  result = subprocess.run([sys.executable, "-m", module, "--helpfull"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  return module, set(_DEFINED.findall(result.stdout)), result


@pytest.fixture(scope="module")
def defined():
  modules = sorted({module for _, module, _ in _command_lines() if module.startswith("daml_tf")})
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    return {module: (flags, result) for module, flags, result in pool.map(_defined_flags,
                                                                          modules)}


def test_documents_hold_command_lines():
  assert len(_command_lines()) > 20


def test_every_documented_command_exists_and_takes_its_flags(defined):
  problems = []
  for document, module, rest in _command_lines():
    if not module.startswith("daml_tf"):
      problems.append(f"{document}: {module} is not an installed command")
      continue
    flags, result = defined[module]
    if not flags:
      problems.append(f"{document}: python -m {module} does not run: {result.stderr[-300:]}")
      continue
    for flag in _FLAG.findall(rest):
      name = flag[2:] if flag.startswith("no") and flag[2:] in flags else flag
      if name not in flags:
        problems.append(f"{document}: python -m {module} has no flag --{flag}")
  assert not problems, "\n".join(sorted(set(problems)))
