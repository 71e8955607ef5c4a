"""The errors a run reports to its user (no traceback: the message says what and why)."""


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says why and what was kept."""


class OptionError(TrainingError):
    """Options that do not fit together, or name files that are not there (exit status 2)."""


class DataError(TrainingError, ValueError):
    """A data file that cannot be used as given: not a beton, truncated (exit status 1). A
    ValueError too, so that callers catching a bad file's ValueError catch it."""


def os_error_line(error: OSError) -> str:
    """An OSError as one line that names its file ('x.beton: Permission denied; check its
    permissions'), not Python's '[Errno 13] ...'; an error without a file as it is."""
    if error.filename is None or not error.strerror:
        return str(error)
    fix = "; check its permissions" if isinstance(error, PermissionError) else ""
    return f"{error.filename}: {error.strerror}{fix}"
