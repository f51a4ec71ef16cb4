"""Exceptions of ``saltmarsh image``.

    MasterError                  (saltmarsh.master.errors)
    └── ImageError               anything ``image build`` or ``image list`` cannot do
        ├── BuildRefused         a build refused before it started (not root, no file root, bad name, exists)
        ├── BuildFailed          a stage of a build failed; nothing of the build is left behind
        └── BuildInterrupted     a build stopped by SIGTERM or SIGHUP; nothing of it is left behind

``str(exc)`` is always one line: the CLI prints it as it is and exits 1.
"""

from __future__ import annotations

from ..errors import MasterError


class ImageError(MasterError):
    """Base of the errors of ``saltmarsh image``."""


class BuildRefused(ImageError):
    """Raised before a build starts, when it must not run (the reason is the message)."""


class BuildFailed(ImageError):
    """Raised when a stage of a build fails (a tool exited non-zero, timed out, or its output is wrong)."""


class BuildInterrupted(ImageError):
    """Raised from a signal handler (SIGTERM, SIGHUP) in the middle of a build."""
