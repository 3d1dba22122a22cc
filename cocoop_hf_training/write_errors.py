"""
A full disk, a read-only or a forbidden output path as one error line naming the path
(cocoop_hf_training/script_runner.run_script), not a traceback: from an OSError that carries its errno, and from
libraries that report it in their own words (torch.save: "file write failed"; safetensors: an IoError), recognised by
the state of the folder they wrote into.
"""

import contextlib
import errno
import os


# The errors of a full disk, a read-only or forbidden folder: reported as one line naming the path.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG)
_LOW_SPACE = 1 << 20  # bytes: less free space than this is a full disk


def _why_unwritable(folder) -> int | None:
    """errno of what keeps `folder` from being written (read-only, full, forbidden), or None when nothing does."""
    try:
        stat = os.statvfs(folder)
    except OSError:
        return None
    if stat.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if stat.f_bavail * stat.f_frsize < _LOW_SPACE:
        return errno.ENOSPC
    if not os.access(folder, os.W_OK):
        return errno.EACCES
    return None


@contextlib.contextmanager
def writing(folder):
    """
    Code that writes into `folder` through libraries that report a full disk in their own words (torch.save: "file
    write failed", safetensors: an IoError): such a failure, when the folder's file system is full, read-only or
    forbidden, becomes the OSError of that cause naming the folder (one line from script_runner.run_script).
    """
    try:
        yield
    except ValueError:  # a refusal with its own message
        raise
    except Exception as error:
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            raise  # already says what and where
        cause = _why_unwritable(folder)
        if cause is None:
            raise
        raise OSError(cause, os.strerror(cause), str(folder)) from error


def write_error_message(error: OSError) -> str | None:
    """One line for a full disk or a read-only / forbidden path, naming it (None for other errors)."""
    if error.errno not in WRITE_ERRNOS:
        return None
    where = error.filename or "the output folder"
    if error.errno in (errno.EACCES, errno.EPERM):  # reading or writing: the path says which
        return f"cannot access {where}: permission denied. Fix its permissions, or choose another path."
    reason = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.EFBIG: "the file is too large for the file system",
        errno.EROFS: "the file system is read-only",
    }[error.errno]
    return f"cannot write {where}: {reason}. Free space, or choose another --output_dir."
