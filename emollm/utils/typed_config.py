"""Typed config loading shared by ``emollm train``, ``emollm merr build`` and ``emollm eval``.

A schema is a dataclass whose fields carry type hints; :func:`convert` checks a raw (YAML) value against a hint and
converts it (Literal, Union/Optional, list, dict, bool/int/float/str, nested dataclasses, Any). Errors name the dotted
key; an unknown key also gets the closest match and the allowed keys. :func:`apply_overrides` applies dotted
``key=value`` overrides (values parsed as YAML; an unquoted ``no`` that YAML reads as false is given back as the
schema's ``'no'``) and :func:`load_yaml_mapping` reads a YAML file with clear errors (an empty file and a key
repeated in one mapping are errors).

Numbers are finite: ``nan``, ``.nan``, ``inf`` and ``-.inf`` are refused wherever a float is read (also inside
``Any`` values), because a NaN learning rate or reward weight passes every ``<`` / ``>`` check and fails only steps
later inside torch; a field that means to accept them says so with ``metadata=bounds(finite=False)``. A field may
also carry its range, checked at the key (``field(default=64, metadata=bounds(ge=1))`` ->
``model.hidden: must be >= 1, got 0``).

Every function takes ``error``, the exception class to raise, so each caller keeps its own (``ConfigError``,
``BuildConfigError``, ``ValueError``). No torch here: the config commands must answer fast.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

# YAML 1.1 words PyYAML reads as booleans (the schema's Literal words they stand for, e.g. mixed_precision: no).
_YAML_FALSE = frozenset({"no", "off", "false", "n"})
_YAML_TRUE = frozenset({"yes", "on", "true", "y"})

__all__ = [
    "apply_overrides",
    "bounds",
    "check_fields",
    "check_range",
    "convert",
    "join",
    "load_yaml_mapping",
    "parse_override",
    "suggest",
    "type_name",
]

_BOUNDS = "emollm_bounds"


def bounds(
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    finite: bool = True,
) -> dict[str, Any]:
    """Field metadata: the allowed range of a number (of each item of a list or mapping of numbers).

    Example:
        >>> @dataclasses.dataclass
        ... class M:
        ...     hidden: int = dataclasses.field(default=64, metadata=bounds(ge=1))
        >>> convert(M, {"hidden": 0}, "model")
        Traceback (most recent call last):
        ...
        ValueError: model.hidden: must be >= 1, got 0

    Args:
        ge, gt, le, lt: Inclusive / exclusive lower and upper bounds (None: unbounded).
        finite: False lets ``nan`` / ``inf`` through (they are refused by default).
    """
    return {_BOUNDS: {"ge": ge, "gt": gt, "le": le, "lt": lt, "finite": finite}}


def check_range(
    key: str,
    value: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    error: type[Exception] = ValueError,
) -> None:
    """Raise ``error("KEY: must be >= X, got V")`` unless ``value`` is a finite number in the range (None passes).

    The one range check of flags and keys: CLIs use it for their numeric options, :func:`convert` for fields with
    :func:`bounds` metadata.
    """
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{key}: must be a finite number, got {value}")
    for op, limit, ok in (
        (">=", ge, lambda v, x: v >= x),
        (">", gt, lambda v, x: v > x),
        ("<=", le, lambda v, x: v <= x),
        ("<", lt, lambda v, x: v < x),
    ):
        if limit is not None and not ok(value, limit):
            raise error(f"{key}: must be {op} {limit:g}, got {value:g}")


def check_fields(obj: Any, prefix: str = "", *, error: type[Exception] = ValueError) -> None:
    """Check the :func:`bounds` of every field of a dataclass instance (call it from ``__post_init__``, so an object
    built in Python is held to the same ranges as one read from YAML)."""
    for f in dataclasses.fields(obj):
        spec = f.metadata.get(_BOUNDS)
        if spec:
            _check_bounds(join(prefix, f.name), getattr(obj, f.name), spec, error)


def _check_bounds(key: str, value: Any, spec: dict[str, Any], error: type[Exception]) -> None:
    limits = {k: spec[k] for k in ("ge", "gt", "le", "lt")}
    if isinstance(value, dict):
        for k, v in value.items():
            _check_bounds(join(key, str(k)), v, spec, error)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_bounds(f"{key}[{i}]", v, spec, error)
    elif not (isinstance(value, float) and not math.isfinite(value) and not spec["finite"]):
        check_range(key, value, error=error, **limits)


def _check_finite(key: str, value: Any, error: type[Exception]) -> None:
    """Refuse a non-finite float anywhere inside an untyped (``Any``) value."""
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{key}: must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(join(key, str(k)), v, error)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(f"{key}[{i}]", v, error)


def join(prefix: str, key: str) -> str:
    """``join("train", "lr")`` -> ``train.lr``; an empty prefix is the root."""
    return f"{prefix}.{key}" if prefix else key


def type_name(tp: Any) -> str:
    """A short name of a type hint for error messages (``list[str] | null``, ``'a' | 'b'``, ``mapping``)."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return f"list[{type_name(args[0])}]" if args else "list"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"dict[{type_name(k)}, {type_name(v)}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def suggest(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option(s), or ``""``."""
    options = [str(o) for o in options]
    word = str(word)
    close = difflib.get_close_matches(word, options, n=2, cutoff=0.6)
    close += [o for o in options if len(word) >= 2 and word in o.split("_") and o not in close]
    close = close[:3]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


def convert(
    tp: Any,
    value: Any,
    key: str = "",
    *,
    error: type[Exception] = ValueError,
    merged: Collection[tuple[str, str]] = (),
    finite: bool = True,
) -> Any:
    """Check ``value`` against type ``tp`` and convert it (nested dataclasses, containers); raise ``error``.

    Args:
        tp: The type hint (a dataclass for a whole config).
        value: The raw value (from YAML).
        key: The dotted key of ``value`` (``""``: the root), used in messages.
        error: The exception class to raise.
        merged: ``(dataclass name, field name)`` pairs of dict fields whose user value is merged into the field's
            default instead of replacing it.
        finite: Refuse ``nan`` / ``inf`` (a field turns this off with ``metadata=bounds(finite=False)``).
    """

    def sub(t: Any, v: Any, k: str, fin: bool = finite) -> Any:
        return convert(t, v, k, error=error, merged=merged, finite=fin)

    where = key or "<root>"
    origin = typing.get_origin(tp)
    if tp is Any:
        if finite:
            _check_finite(where, value, error)
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise error(f"{where}: expected a mapping of {tp.__name__} keys, got {type(value).__name__} {value!r}")
        hints = typing.get_type_hints(tp)
        names = [f.name for f in dataclasses.fields(tp)]
        for k in value:
            if k not in names:
                raise error(
                    f"{join(key, str(k))}: unknown key{suggest(k, names)}; "
                    f"allowed keys under {where}: {', '.join(names)}"
                )
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name not in value:
                continue
            v = value[f.name]
            if (tp.__name__, f.name) in merged and isinstance(v, dict):
                v = {**getattr(tp(), f.name), **v}
            spec = f.metadata.get(_BOUNDS)
            kwargs[f.name] = sub(hints[f.name], v, join(key, f.name), spec["finite"] if spec else finite)
            if spec:
                _check_bounds(join(key, f.name), kwargs[f.name], spec, error)
        try:
            return tp(**kwargs)
        except (TypeError, ValueError) as e:  # a __post_init__ check of a reused core dataclass
            raise error(f"{where}: {e}") from None
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise error(f"{where}: must not be null; expected {type_name(tp)}")
        errors = []
        # Try Literal / bool members before str so that 'auto' and true are told apart.
        for arg in sorted((a for a in args if a is not type(None)), key=lambda a: typing.get_origin(a) is not Literal):
            try:
                return sub(arg, value, key)
            except error as e:
                errors.append(e)
        if len(errors) == 1:
            raise errors[0]
        raise error(f"{where}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if isinstance(value, bool) and not any(isinstance(a, bool) for a in allowed):
            # YAML 1.1 reads an unquoted no/off (yes/on) as false (true): give back the word the schema allows.
            words = _YAML_FALSE if value is False else _YAML_TRUE
            for a in allowed:
                if isinstance(a, str) and a.lower() in words:
                    return a
        elif value in allowed:
            return value
        raise error(
            f"{where}: {value!r} is not allowed{suggest(value, [str(a) for a in allowed])}; "
            f"allowed values: {', '.join(repr(a) for a in allowed)}"
        )
    if origin in (list, tuple):
        (item,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            raise error(f"{where}: expected a list ({type_name(tp)}), got {type(value).__name__} {value!r}")
        return [sub(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            raise error(f"{where}: expected a mapping ({type_name(tp)}), got {type(value).__name__} {value!r}")
        return {str(k): sub(vt, v, join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise error(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise error(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # PyYAML reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if number is None:
            raise error(f"{where}: expected a number, got {value!r}")
        if finite and not math.isfinite(number):
            raise error(f"{where}: must be a finite number, got {value!r}")
        return number
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise error(f"{where}: expected a string, got {type(value).__name__} {value!r}")
    raise error(f"{where}: unsupported schema type {tp!r}")  # a schema bug, not a user error


def parse_override(
    item: str, *, error: type[Exception] = ValueError, example: str = "a.b=1", empty: Any = ""
) -> tuple[list[str], Any]:
    """``"a.b=[1, 2]"`` -> ``(["a", "b"], [1, 2])``; the value is YAML (the raw text when it is not).

    Args:
        example: A dotted ``key=value`` example of the caller's schema, shown in errors.
        empty: The value of ``key=`` (nothing after ``=``).
    """
    if "=" not in item:
        raise error(f"override {item!r}: expected key=value (e.g. {example})")
    key, raw = item.split("=", 1)
    key = key.strip().removeprefix("--")
    if not key or any(not part for part in key.split(".")):
        raise error(f"override {item!r}: empty key part; write dotted keys like {example}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else empty
    except yaml.YAMLError:
        value = raw  # not YAML (e.g. a prompt with ': ' and braces): the text itself; the type check still applies
    return key.split("."), value


def apply_overrides(
    data: dict[str, Any],
    overrides: Sequence[str],
    *,
    error: type[Exception] = ValueError,
    example: str = "a.b=1",
    empty: Any = "",
) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML: ``null``, ``true``, ``[a, b]``) to a raw dict.

    The input is not modified; a non-mapping on the way to a key is replaced by a mapping.
    """
    data = dict(data)
    for item in overrides:
        parts, value = parse_override(item, error=error, example=example, empty=empty)
        node = data
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node[parts[-1]] = value
    return data


class _DuplicateKeyError(yaml.YAMLError):
    """A mapping holds the same key twice (PyYAML would silently keep the last value)."""

    def __init__(self, key: Any, first_line: int, line: int):
        super().__init__(f"duplicate key {key!r}")
        self.key, self.first_line, self.line = key, first_line, line


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key repeated in one mapping, at every nesting level (merge keys ``<<``
    may still be overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor raises its own error
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKeyError(key, first, line)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def load_yaml_mapping(path: str | Path, *, error: type[Exception] = ValueError, expected: str = "") -> dict[str, Any]:
    """Read a YAML file whose top level is a mapping.

    Args:
        expected: What the top-level mapping holds (``" with model/data/train"``), shown in errors.

    Raises:
        FileNotFoundError: no such file.
        error: invalid YAML, a key repeated in one mapping (naming the key and both lines), an empty file (nothing
            but blanks and comments: running on the defaults is never what was meant), or a top level that is not
            a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text ({e.reason}); save the file as UTF-8") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except _DuplicateKeyError as e:
        raise error(
            f"{path}:{e.line}: duplicate key {e.key!r} (first on line {e.first_line}); YAML would keep only the last "
            "value: remove or rename one of them"
        ) from None
    except yaml.YAMLError as e:  # one line: PyYAML's own message spans several, with a "<unicode string>" mark
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or (str(e).strip().splitlines() or [type(e).__name__])[0]
        context = getattr(e, "context", None)
        raise error(f"{where}: invalid YAML ({f'{context}: ' if context else ''}{problem}); fix that line") from None
    if loaded is None:
        what = expected.strip().removeprefix("with ").strip()
        raise error(
            f"{path}: the config file is empty (only blanks or comments); write the settings into it"
            + (f" ({what})" if what else "")
            + ", or pass another file"
        )
    if not isinstance(loaded, dict):
        raise error(f"{path}: the top level must be a mapping{expected}, got {type(loaded).__name__}")
    return loaded
