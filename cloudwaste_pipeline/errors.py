"""The project's own error: a problem a person can fix, said in one sentence.

The CLI prints its message on one line of stderr and exits 2, without a traceback; the API
raises it as it is. It is a ``ValueError`` so callers that already catch ``ValueError`` keep
working. Messages never hold a raw id, a key or a password.
"""


class CloudWasteError(ValueError):
    """A bad setting, argument, input or environment, explained in one sentence."""
