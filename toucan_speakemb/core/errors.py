"""The one exception type users see: its message is a single line naming the problem."""


class SpeakEmbError(Exception):
    """Bad input or a state the user can fix. The CLI prints ``error: <message>`` and exits non-zero."""
