"""Configs as frozen dataclasses: YAML presets, ``--section.field value`` overrides, no guessing.

A config is a frozen dataclass whose fields are either plain values (``int``, ``float``,
``str``, ``bool``, ``X | None``, tuples of those) or nested config dataclasses (its sections).
``load_config(cls, preset_mapping, overrides)`` starts from the class defaults, applies the
preset (a nested mapping, usually read from YAML) and then the overrides; every key must name a
field, and every value is checked against the field's type, so a typo is an error rather than a
silently ignored knob. ``config_to_dict`` gives the resolved config back as plain data, which
the trainers save next to every run. No torch here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")


class ConfigError(ValueError):
    """A preset or override that does not fit the config."""


def _yaml_problem(err: yaml.YAMLError | RecursionError) -> str:
    """What is wrong with a YAML text, on one line (PyYAML's own message spans several)."""
    if isinstance(err, RecursionError):
        return "nested too deeply"
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(err).split())


def load_yaml(text: str, where: str) -> Any:
    """The value of the YAML ``text``; a ``ConfigError`` naming ``where`` when it is not YAML
    or nests too deeply for the parser (which recurses)."""
    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as err:
        raise ConfigError(f"{where}: not valid YAML ({_yaml_problem(err)})") from None


def read_json(path: str | Path) -> Any:
    """The value of the JSON file ``path``; a ``ValueError`` naming the file when it is not
    UTF-8 JSON or nests too deeply for the parser (which recurses)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        problem = f"{err.msg} at line {err.lineno}, column {err.colno}"
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except RecursionError:
        problem = "nested too deeply"
    raise ValueError(f"{path}: not valid JSON ({problem})")


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file that holds one mapping (an empty file is an empty mapping)."""
    data = load_yaml(Path(path).read_text(encoding="utf-8"), str(path))
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top, got {type(data).__name__}")
    return data


def parse_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``["--optim.lr", "1e-5", "--run.steps=3"]`` → ``{"optim": {"lr": 1e-5}, "run": {...}}``.

    Values are parsed as YAML scalars (``3`` → int, ``null`` → None, ``[1, 2]`` → list).
    """
    result: dict[str, Any] = {}
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"expected --section.field VALUE, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(items):
                raise ConfigError(f"override {arg} has no value")
            value = items[i + 1]
            i += 1
        i += 1
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {key} conflicts with another override")
        node[leaf] = load_yaml(value, f"override --{key}")
    return result


def to_overrides(settings: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``{"run": {"seed": 3}}`` → ``["--run.seed", "3"]``: the overrides ``parse_overrides``
    reads back as ``settings`` (values as YAML scalars)."""
    args: list[str] = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            args += to_overrides(value, f"{prefix}{key}.")
        else:
            text = yaml.safe_dump(value, default_flow_style=True, width=10**9)
            args += [f"--{prefix}{key}", text.removesuffix("\n...\n").strip()]
    return args


def merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``extra``, section by section (nested mappings merge, values replace)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against (and lightly converted to) the type ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
    if typing.get_origin(hint) is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(hint)}")
        return value
    if hint is float:
        return _float(value, where)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    if hint is Any:
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _float(value: Any, where: str) -> float:
    """``value`` as a float setting; NaN is refused (every comparison with it is false, so no
    check downstream would catch it)."""
    # YAML 1.1 reads "3e-5" as a string
    number_like = isinstance(value, int | float | str) and not isinstance(value, bool)
    try:
        number = float(value) if number_like else None
    except (ValueError, OverflowError):  # not a number; an integer past float's range
        number = None
    if number is None:
        raise ConfigError(f"{where}: expected float, got {value!r}")
    if math.isnan(number):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return number


def build(cls: type[C], data: Mapping[str, Any], where: str = "") -> C:
    """An instance of the config dataclass ``cls`` from the nested mapping ``data``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(f'{where}{k}' for k in unknown)}; "
            f"known: {', '.join(f'{where}{k}' for k in fields)}"
        )
    missing = [name for name, f in fields.items() if name not in data and _required(f)]
    if missing:
        raise ConfigError(f"missing config key(s) {', '.join(f'{where}{k}' for k in missing)}")
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, f"{where}{name}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, hint, f"{where}{name}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:  # a check in __post_init__
        raise ConfigError(f"{where.rstrip('.')}: {err}" if where else str(err)) from err


def _required(field: dataclasses.Field[Any]) -> bool:
    """Whether a config must name ``field`` (it has no default)."""
    no_default = field.default is dataclasses.MISSING
    return field.init and no_default and field.default_factory is dataclasses.MISSING


def load_config(
    cls: type[C], preset: Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> C:
    """``cls`` defaults, then ``preset``, then ``--section.field value`` ``overrides``."""
    data = merge(preset or {}, parse_overrides(overrides))
    return build(cls, data)


def config_to_dict(config: Any) -> dict[str, Any]:
    """The resolved config as plain data (tuples as lists): what a run saves."""
    data = dataclasses.asdict(config)

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    result: dict[str, Any] = plain(data)
    return result


def dump_yaml(config: Any, path: str | Path) -> Path:
    """Write the resolved ``config`` as YAML to ``path``."""
    path = Path(path)
    path.write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")
    return path
