"""Progress of a long loop: a redrawn bar on a terminal, log lines in a log file.

The bar is keras.utils.Progbar; a log file instead gets a line every `log_every` items (and at
the last), so it stays readable.
"""

import sys
from typing import Callable, Optional, Sequence, Tuple

from absl import logging


class Progress:
  """Reports `done` of `total` items.

  Args:
    total: items of the loop.
    unit_name: what an item is ("step", "video"), on the bar.
    log_every: items between log lines when there is no terminal.
    stateful_metrics: names of bar values shown as they are rather than averaged.
  """

  def __init__(self, total: int, unit_name: str = "step", log_every: int = 1,
               stateful_metrics: Sequence[str] = ()):
    self._total = total
    self._log_every = max(1, log_every)
    self._bar = None
    if sys.stdout.isatty():
      import keras  # pylint: disable=g-import-not-at-top  # Only a terminal draws the bar.
      self._bar = keras.utils.Progbar(total, unit_name=unit_name,
                                      stateful_metrics=list(stateful_metrics) or None)

  def update(self, done: int, log_line: Callable[[], str],
             values: Optional[Sequence[Tuple[str, float]]] = None) -> None:
    """Moves to `done` items; `log_line()` is what a log file gets, `values` what the bar shows."""
    if self._bar is not None:
      self._bar.update(done, values)
    elif done % self._log_every == 0 or done == self._total:
      logging.info("%s", log_line())
