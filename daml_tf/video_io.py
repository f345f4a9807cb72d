"""Moved to daml_tf.data.video_io; this name stays for scripts that import it from here."""

import sys

from daml_tf.data import video_io as _video_io

sys.modules[__name__] = _video_io
