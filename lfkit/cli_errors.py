"""Errors as plain sentences: what went wrong, with which path, and what to do.

The ``lfkit`` command's one handler (:class:`lfkit.cli.LfkitTyper`) turns any exception a
command lets escape into one line from :func:`plain_message` (``--debug`` shows the traceback
instead). An :class:`OSError` from the operating system carries an errno and a path; users
get a sentence naming the path and the fix, never ``[Errno 17] File exists: 'afile'``.
Commands that catch ``OSError`` themselves can print :func:`plain_message` too.
"""

from __future__ import annotations

import errno

# errno -> sentence about PATH (the path the system call was given) and what to do.
_OS_ERRORS: dict[int, str] = {
    errno.EEXIST: (
        "{path} already exists and is in the way (a file where a directory is needed, or an "
        "output that must be new): choose another path, or move {path} away"
    ),
    errno.ENOENT: "{path} does not exist: check the path (relative paths start from {cwd})",
    errno.ENOTDIR: "a part of {path} is a file, not a directory: check the path",
    errno.EISDIR: "{path} is a directory, but a file is needed here: give the path of a file",
    errno.EACCES: "permission denied for {path}: check its permissions, or choose a path you can write to",
    errno.EPERM: "{path}: the operation is not permitted: check its permissions and owner",
    errno.ENOSPC: "no space left on the device holding {path}: free some space, or write elsewhere",
    errno.EROFS: "{path} is on a read-only file system: write somewhere else",
    errno.ENAMETOOLONG: "the path {path} is too long for the file system: choose a shorter one",
}


def plain_message(exc: BaseException) -> str:
    """One sentence for an error a command did not handle itself (no errno, no traceback)."""
    if isinstance(exc, OSError):
        return _os_message(exc)
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        top = exc.name.split(".")[0]
        return (
            f"the Python module '{top}' is not installed in this environment: install the package "
            f"that provides it (usually pip install {top}); lfkit doctor shows what else is missing"
        )
    text = str(exc).strip() or type(exc).__name__
    return (
        f"{text} ({type(exc).__name__}). This is unexpected: run the command again with --debug "
        "(lfkit --debug ...) to see where it happened, and report it if it looks like a bug in lfkit"
    )


def expected_message(exc: BaseException) -> str:
    """The sentence for an error a command expects and reports itself (bad input, a path in the way).

    An :class:`OSError` gets the same plain sentence as :func:`plain_message`; any other exception's
    own text is already written for the user.
    """
    return _os_message(exc) if isinstance(exc, OSError) else str(exc)


def _os_message(exc: OSError) -> str:
    import os

    if exc.filename is None or exc.errno is None:
        # Raised by code with its own message (e.g. FileExistsError("OUT must not exist")).
        return str(exc.args[0]) if exc.args else type(exc).__name__
    path = repr(os.fsdecode(exc.filename)) if exc.filename2 is None else _two_paths(exc)
    template = _OS_ERRORS.get(exc.errno)
    if template is None:
        reason = (exc.strerror or type(exc).__name__).rstrip(".")
        return f"{path}: {reason[0].lower()}{reason[1:]}: check the path and try again"
    return template.format(path=path, cwd=_cwd())


def _two_paths(exc: OSError) -> str:
    import os

    return f"{os.fsdecode(exc.filename)!r} (to {os.fsdecode(exc.filename2)!r})"


def _cwd() -> str:
    import os

    try:
        return os.getcwd()
    except OSError:
        return "the working directory"
