"""The one exception type users see: the CLI turns it into a clean message and exit code 2."""

from __future__ import annotations


class WhichloraError(Exception):
    """A problem the user can fix; the message names what, where, and how to fix it."""

    exit_code = 2
