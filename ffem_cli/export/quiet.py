"""Keep converter chatter off the terminal.

The TFLite converter (MLIR, C++ logging), tf2onnx (Python logging) and
TensorFlow's tracing print progress lines to stdout and stderr at the file
descriptor level, below Python's ``sys.stdout``. ``captured_output`` points
descriptors 1 and 2 at a temporary file for the duration of a conversion and
silences Python warnings; the captured text is replayed to stderr only when
the conversion fails with an unexpected exception (not ``FfemError``, which
is already one clear line), so a crash still shows the converter's reasons.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

from ffem_cli.errors import FfemError

CHATTY_LOGGERS = ("tf2onnx", "absl", "tensorflow", "h5py")


@contextlib.contextmanager
def captured_output() -> Iterator[None]:
    """Redirect fds 1 and 2 into a temporary file; replay it to stderr on a crash."""
    sys.stdout.flush()
    sys.stderr.flush()
    levels = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    with tempfile.TemporaryFile() as log:
        saved_stdout, saved_stderr = os.dup(1), os.dup(2)
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        failed = False
        try:
            for name in CHATTY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        except FfemError:
            raise
        except BaseException:
            failed = True
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved_stdout, 1)
            os.dup2(saved_stderr, 2)
            os.close(saved_stdout)
            os.close(saved_stderr)
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)
            if failed:
                log.seek(0)
                sys.stderr.write(log.read().decode("utf-8", "replace"))
                sys.stderr.flush()
