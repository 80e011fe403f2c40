"""The few exception types goggleqc raises on user input.

Each message says what is wrong and what to do about it; the CLI prints the message and
never a traceback.
"""


class GoggleQCError(Exception):
    """Base class: an error caused by the input, with a message meant for the user."""


class InputError(GoggleQCError):
    """An image or argument that cannot be used (unreadable, wrong size, blank, ...)."""


class CalibrationError(GoggleQCError):
    """A station folder or calibration frame that cannot be used."""


class SpecError(GoggleQCError):
    """A spec (pass/fail limits) file that cannot be used."""
