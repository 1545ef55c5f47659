"""One validation layer for everything a user or a submitter hands us.

Manifests, predictions, model cards, recipes, run parameters and results are untrusted input: each is
checked by type and range *when read*, before any request is sent or any file is replaced, and every
failure becomes one :class:`InputError` line, ``path:line: field 'x': what is wrong``. Shapes with
many fields (cards, recipes, run parameters) are pydantic v2 models validated through
:func:`validated`; the row readers that run on 130k lines (manifest, predictions) keep hand-written
checks for speed but raise the same error. JSON from outside always goes through :func:`loads_json`,
which turns the parser's own failures (deep nesting, NaN, bad UTF-8) into that one line.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from mmrbench.errors import InputError

__all__ = ["InputError", "MAX_JSON_DEPTH", "loads_json", "read_json_file", "read_toml", "validated", "finite"]

#: deepest nesting of brackets accepted in untrusted JSON; our formats need fewer than 10 levels,
#: and Python's decoder raises RecursionError a little below 1000
MAX_JSON_DEPTH = 64


def depth_exceeds(text: str, limit: int) -> bool:
    """True when brackets outside strings nest deeper than ``limit`` (one linear pass)."""
    depth = 0
    in_str = False
    esc = False
    for ch in text:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


class _ConstantError(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _ConstantError(f"{name} is not valid JSON")


def loads_json(data: str | bytes, where: str = "<input>") -> Any:
    """``json.loads`` for untrusted text: bad UTF-8, NaN/Infinity, and nesting deeper than
    :data:`MAX_JSON_DEPTH` are one-line :class:`InputError` s, never a traceback."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"not valid JSON (not UTF-8: {exc.reason} at byte {exc.start})", path=where) from None
    if data.count("[") + data.count("{") > MAX_JSON_DEPTH and depth_exceeds(data, MAX_JSON_DEPTH):
        raise InputError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", path=where)
    try:
        return json.loads(data, parse_constant=_no_constant)
    except RecursionError:  # pragma: no cover - the depth check above comes first
        raise InputError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels", path=where) from None
    except _ConstantError as exc:  # NaN / Infinity: Python's json takes them, JSON does not
        raise InputError(str(exc), path=where) from None
    except (json.JSONDecodeError, ValueError) as exc:
        raise InputError(f"not valid JSON ({exc})", path=where) from None


def read_json_file(path: str | os.PathLike, what: str = "file", *, error: type[InputError] = InputError) -> Any:
    """A JSON file from outside (a submission, a release, an answers file): missing file, bad UTF-8,
    NaN and deep nesting are one line naming the file, through :func:`loads_json`."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        return loads_json(p.read_bytes(), str(p))
    except InputError as exc:
        raise error(str(exc)) from None


def read_toml(path: str | os.PathLike, what: str = "file", *, error: type[InputError] = InputError) -> dict[str, Any]:
    """A TOML file (a model card, a recipe, a sources file): missing file and bad TOML are one line."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} not found: {p}")
    try:
        return tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{p}: not valid TOML ({exc})") from None


T = TypeVar("T")


def _field_name(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ".".join(parts) if parts else None


def validated(model: type[T], data: Any, where: str = "<input>", *, line: int | None = None,
              error: type[InputError] = InputError) -> T:
    """Validate ``data`` against a pydantic model; the first error becomes one InputError line."""
    from pydantic import ValidationError

    try:
        return model.model_validate(data)  # type: ignore[attr-defined]
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        msg = err.get("msg", "invalid value")
        got = err.get("input")
        if err.get("type") not in ("missing", "extra_forbidden") and not isinstance(got, (dict, list)):
            msg += f" (got {got!r})"[:200]
        if err.get("type") == "extra_forbidden":
            known = ", ".join(sorted(getattr(model, "model_fields", {}) or {}))
            msg = f"unknown key (known: {known})" if known and len(err.get("loc", ())) == 1 else "unknown key"
        raise error(msg, path=where, line=line, field=_field_name(tuple(err.get("loc", ())))) from None


def finite(x: float, name: str) -> float:
    """``x`` when it is a finite number; else a ValueError naming ``name`` (for pydantic validators)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        raise ValueError(f"{name} must be a finite number")
    return float(x)
