"""Named crash points for the fault-injection tests: a process killed where it hurts most.

``crash_point("export.publish")`` does nothing unless ``CLOUDWASTE_FAULT_CRASH_AT`` names that
point (a comma-separated list may name several), in which case the process dies on the spot with
``os._exit``: no ``finally``, no ``atexit``, no flush, which is what a SIGKILL or a pulled plug
leaves behind. The tests arm a point in a child process and check that the next run recovers.
Production never sets the variable; reading it costs one dictionary lookup.
"""

from __future__ import annotations

import os

from cloudwaste_pipeline import settings

CRASH_ENV = "CLOUDWASTE_FAULT_CRASH_AT"
CRASH_EXIT_CODE = 86
"""The exit status of a process killed at a crash point, so a test can tell it from a failure."""


def crash_point(name: str) -> None:
    """Die here when the environment arms ``name`` (tests only)."""
    if name in settings.get(CRASH_ENV):
        os._exit(CRASH_EXIT_CODE)
