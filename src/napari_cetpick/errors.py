"""Errors a user can cause."""


class CetpickError(ValueError):
    """A problem with the user's input: bad file, wrong axis order, labels outside the volume.

    The message is one plain sentence naming the file (when there is one) and the problem.
    The CLI prints it without a traceback and exits non-zero; widgets show it as a
    notification.
    """
