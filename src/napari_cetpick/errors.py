"""Errors a user can cause."""


class CetpickError(ValueError):
    """A problem with the user's input: bad file, wrong axis order, labels outside the volume.

    The message is one plain sentence naming the file (when there is one) and the problem.
    The CLI prints it without a traceback and exits non-zero; widgets show it as a
    notification.
    """


def plain(value) -> str:
    """A value as plain text for messages: ``(200, 50.5, 3)``, not numpy reprs.

    numpy 2 writes ``np.float64(200.0)`` for ``repr`` of its scalars, which also shows in
    tuples of them; users should read plain numbers.
    """
    import numbers

    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy scalars and arrays -> Python numbers and lists
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value):g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(plain(v) for v in value) + ")"
    if isinstance(value, str):
        return repr(value)
    return str(value)
