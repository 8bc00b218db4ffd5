"""The exception types: the one users see (the CLI turns it into a clean message and exit code
2), and the one a training run raises when its loss diverges."""

from __future__ import annotations


class WhichloraError(Exception):
    """A problem the user can fix; the message names what, where, and how to fix it."""

    exit_code = 2


class TrainingDiverged(Exception):
    """Loss became NaN or infinite: the run failed, the study goes on."""
