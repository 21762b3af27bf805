"""The error of the replay commands (light to import: the console command catches it)."""


class ReplayError(Exception):
    """A reindex or re-embed cannot go on; the message says what to do."""
