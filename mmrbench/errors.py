"""Exceptions the command line turns into one-line messages instead of tracebacks."""


class MMRBenchError(Exception):
    """Base class: any error a user can fix (bad path, bad manifest, missing key)."""


class InputError(MMRBenchError):
    """Bad input (manifest, predictions, card, recipe, result, run parameter): one line that names the
    file, the line and the field when they are known. See :mod:`mmrbench.validation`."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = path, line, field
        where = ""
        if path is not None:
            where = f"{path}"
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            message = f"field '{field}': {message}"
        super().__init__(where + message)


class ManifestError(InputError):
    """A manifest line is malformed."""


class ConfigError(InputError):
    """A model card, recipe or command-line option is unusable."""


class MissingExtraError(MMRBenchError):
    """An optional dependency is not installed; the message names the extra to install."""

    def __init__(self, package: str, extra: str, purpose: str = ""):
        what = f" for {purpose}" if purpose else ""
        super().__init__(f"'{package}' is needed{what} but is not installed: pip install 'mmrbench[{extra}]'")


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional dependency lazily, turning ImportError into an actionable message."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised via tests with a fake module name
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc
