class ReelfaceError(Exception):
    """An error the user can cause and fix (bad path, no video stream, missing weights...).

    The CLI prints its message without a traceback and exits non-zero, so the message must say
    what went wrong and what to do about it.
    """
