"""Stopping the worker: when it began, the deadline every thread works to, and the window at
the end of it kept for giving held messages back (the contract: finish and commit what is in
hand, delete it, return the rest, exit within shutdown_timeout).

One object so that no thread reads a bare deadline another wrote: the worker begins the
shutdown, the roles ask it whether to carry on, how long to back off, and whether the time
left is the release's.
"""

from __future__ import annotations

import threading
import time

from login_etl import logs

log = logs.get("login_etl.shutdown")

# The end of the shutdown bound kept for giving held messages back.
RELEASE_SECONDS = 3.0


class Shutdown:
    """Set once, by a signal's path (Worker.stop) or by a fault no retry can fix (halt)."""

    def __init__(self) -> None:
        self._stopping = threading.Event()
        # Written before _stopping is set and never again: whoever sees it set reads the final
        # value.
        self._deadline = float("inf")
        self.fatal: str | None = None

    def begin(self, seconds: float) -> None:
        """Start stopping, everything to be done within `seconds`."""
        self._deadline = time.monotonic() + seconds
        self._stopping.set()

    @property
    def deadline(self) -> float:
        """The monotonic time the process must be gone by; infinite until stopping."""
        return self._deadline

    @property
    def settle_by(self) -> float:
        """Settling ends here; what is left of the bound is the release's."""
        return self._deadline - RELEASE_SECONDS

    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, woken by the shutdown; True if stopping."""
        return self._stopping.wait(seconds)

    def past_settling(self) -> bool:
        """Stopping, and the time left is kept for giving messages back."""
        return self.stopping() and time.monotonic() > self.settle_by

    def pause(self, seconds: float) -> None:
        """Back off; once stopping, still back off (no spinning) but never past settling."""
        if not self._stopping.wait(seconds):
            return
        time.sleep(max(0.0, min(seconds, self.settle_by - time.monotonic())))

    def halt(self, reason: str) -> None:
        """A fault no retry can fix (queue deleted, access denied): stop and say why, exit 1.
        The worker's watch loop sees it and begins the shutdown."""
        if self.fatal is None:
            self.fatal = reason
            log.error("worker_halted", reason=reason)
