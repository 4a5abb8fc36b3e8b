"""What the role map and the approval policy share when they read a YAML file.

Each file keeps its own error class: these helpers give the sentences, the caller raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

# The caller's error class: (source, key path, what is wrong).
Refusal = Callable[[str, str, str], Exception]


def read_text(path: Path, error: Refusal) -> str:
    """The file's text; a file that cannot be read raises error(path, "", why)."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(str(path), "", f"it cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise error(str(path), "", "it is not UTF-8 text") from exc


def parse(text: str, loader: type[yaml.SafeLoader], source: str, error: Refusal) -> Any:
    """The YAML document in text; text that is not YAML raises error(source, "", why)."""
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader subclass, by its type
    except yaml.YAMLError as exc:
        raise error(source, "", f"it is not valid YAML ({yaml_problem(exc)})") from exc


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What the YAML parser refused, with its line and column when it knows them."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"


def key_path(loc: Sequence[int | str]) -> str:
    """A pydantic location as the file's key path (groups.data[0]); validator names left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-"):
            out += ("." if out else "") + part
    return out


def first_problem(exc: ValidationError, sentences: Mapping[str, str]) -> tuple[str, str]:
    """The first problem's key path and sentence; sentences replaces pydantic's by error type."""
    errors = exc.errors()
    first = errors[0]
    what = sentences.get(first["type"])
    if what is None:
        what = str(first["msg"]).removeprefix("Value error, ")
        what = what[0].lower() + what[1:]
    more = len(errors) - 1
    if more:
        what += f" (and {more} more problem{'s' if more > 1 else ''})"
    return key_path(first["loc"]), what


def no_duplicate_keys(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Any:
    """A key given twice would silently drop the first value: refuse it instead."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # "<<: *anchor": merged keys may be overridden, as YAML intends
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "a key must be a plain value, not a list or mapping",
                key_node.start_mark,
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=True)
