"""The package's error classes: library code raises them, only the CLI turns them into messages and exit codes.

Every error a user can cause (a bad argument, a bad YAML row, a malformed annotation file, an export this machine
cannot run) is a :class:`FineYoloError`; its message names the argument, row, file or line. ``exit_code`` is what the
``fine-yolo`` command returns for it.
"""

from __future__ import annotations


class FineYoloError(Exception):
    """Base of every error fine_yolo reports to a user (message: one sentence naming what is wrong)."""

    exit_code = 1


class UsageError(FineYoloError, ValueError):
    """A command-line argument is missing, unknown or malformed; the message names it."""

    exit_code = 2
