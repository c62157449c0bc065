"""A plugin that injures the run it is loaded into, when environment variables ask it to.

Named in a test's YAML (``plugins: [fault_plugin.py]``) so that the config of
the injured launch and of its relaunch are the same file; only the environment
differs. Used by tests/test_reliability.py.
"""

import os
import signal
import time
from pathlib import Path

from jepa_core import hookimpl


@hookimpl
def jepa_after_step(step, metrics):
    if os.environ.get("JEPA_TEST_KILL_AT") == str(step):
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("JEPA_TEST_PAUSE_AT") == str(step):
        Path(os.environ["JEPA_TEST_PAUSED"]).touch()
        time.sleep(300)  # the test kills us long before this ends
