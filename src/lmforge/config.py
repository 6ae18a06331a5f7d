"""Typed configs: dataclasses are the schema; YAML recipes and dotted CLI overrides fill them.

    cfg = load_config(PretrainConfig, ["configs/tiny.yaml", "--optim.lr", "3e-4"])

Every stage declares one dataclass (nested dataclasses for groups such as `model` or
`optim`). A recipe is a YAML mapping with the same shape; `--a.b value` overrides one
field. Values are parsed as YAML scalars and checked against the field's type, and an
unknown key is an error that names the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A recipe or override that does not fit the config schema."""


def require(ok: bool, name: str, rule: str, value: Any) -> None:
    """For a config's `__post_init__`: an impossible value is an error naming its field
    (`from_dict` prefixes the group, e.g. `loop.max_steps: must be >= 1, got -5`)."""
    if not ok:
        raise ConfigError(f"{name}: must be {rule}, got {value!r}")


def load_config(cls: type[T], argv: list[str]) -> T:
    """Build `cls` from optional YAML recipe paths followed by `--dotted.key value` overrides."""
    merged: dict[str, Any] = {}
    i = 0
    while i < len(argv) and not argv[i].startswith("--"):
        _deep_update(merged, _read_yaml(Path(argv[i])))
        i += 1
    for key, value in _parse_overrides(argv[i:]):
        _set_dotted(merged, key, value)
    return from_dict(cls, merged)


def from_dict(cls: type[T], data: dict[str, Any], where: str = "", base: T | None = None) -> T:
    """Recursively build dataclass `cls` from a plain mapping, validating names and types.
    Fields the mapping leaves out keep `base`'s values (the enclosing config's default for
    this group, e.g. a stage's own `optim` defaults), else the class defaults."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise ConfigError(_unknown_key_message(f"{where}{key}", key, list(fields)))
        default = getattr(base, key) if base is not None else _field_default(fields[key])
        kwargs[key] = _coerce(hints[key], value, f"{where}{key}", default)
    try:
        return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
    except ConfigError as e:  # a __post_init__ check: name the field with its group
        raise ConfigError(f"{where}{e}") from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, path: Path) -> None:
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def field_comments(cls: type) -> dict[str, str]:
    """The trailing `# comment` of each field in the class source (and its bases'): the
    field's documentation."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        found.update(re.findall(r"^\s+(\w+)\s*:[^#\n]*#\s*(.+)$", source, flags=re.M))
    return found


def _coerce(hint: Any, value: Any, where: str, default: Any = None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, where, default)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        if dataclasses.is_dataclass(value):
            return value
        return from_dict(hint, value or {}, where + ".", default if isinstance(default, hint) else None)
    if origin in (list, tuple):
        items = value if isinstance(value, (list, tuple)) else [value]
        item_type = args[0] if args else Any
        coerced = [_coerce(item_type, v, f"{where}[{j}]") for j, v in enumerate(items)]
        return coerced if origin is list else tuple(coerced)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if hint is Any:
        return value
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _is_number(value):
        return float(value)  # YAML 1.1 reads "3e-4" (no dot) as a string
    if hint is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if hint is bool and isinstance(value, bool) or isinstance(value, hint) and not (
        hint is int and isinstance(value, bool)
    ):
        return value
    raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """`--a.b 1 --c x y --flag` -> [("a.b", 1), ("c", ["x", "y"]), ("flag", True)]; a repeated
    key collects its values (`--task a --task b` -> ("task", ["a", "b"]))."""
    pairs = []
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key, got {arg!r}")
        key, _, inline = arg[2:].partition("=")
        key = key.replace("-", "_")
        if inline:
            values = [inline]
            i += 1
        else:
            values = []
            i += 1
            while i < len(args) and not (args[i].startswith("--") and len(args[i]) > 2
                                          and not _is_number(args[i])):
                values.append(args[i])
                i += 1
        parsed = [yaml.safe_load(v) if v != "" else "" for v in values]
        if not parsed:
            pairs.append((key, True))
        else:
            pairs.append((key, parsed[0] if len(parsed) == 1 else parsed))
    collected: dict[str, Any] = {}
    for key, value in pairs:
        if key in collected:
            before = collected[key] if isinstance(collected[key], list) else [collected[key]]
            value = before + (value if isinstance(value, list) else [value])
        collected[key] = value
    return list(collected.items())


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"--{key}: {p} is not a group")
    tree[leaf] = value


def _deep_update(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_update(dst[k], v)
        else:
            dst[k] = v


def _read_yaml(path: Path) -> dict:
    if not path.exists():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:  # one line: where, then what
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of config keys")
    return data


def _unknown_key_message(full: str, key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    return f"unknown config key {full!r}{hint}"
