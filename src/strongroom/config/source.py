"""Reading YAML with a line number for every field, so each config error can say where it is.

The file is composed into PyYAML's node tree (SafeLoader: no Python tags), constructed into plain
data, and every mapping key and sequence item is mapped from its path (``("vaults", "x", "lock")``)
to the line it starts on. A path that has no line of its own (a missing field, a value that came
from a variable) falls back to its nearest parent that has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from strongroom.errors import ConfigError

Path_ = tuple[str | int, ...]
MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_REPORTED = 5


@dataclass(frozen=True)
class SourceMap:
    """Where each field of one YAML file starts."""

    file: str
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int:
        for end in range(len(path), -1, -1):
            found = self.lines.get(path[:end])
            if found is not None:
                return found
        return 1

    def where(self, path: Path_) -> str:
        return f"{self.file}:{self.line(path)}"

    def problem(self, path: Path_, message: str) -> str:
        """One located problem: ``file:line: dotted.path: message``."""
        dotted = dotted_path(path)
        return f"{self.where(path)}: {dotted}: {message}" if dotted else f"{self.where(path)}: {message}"


def dotted_path(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def raise_problems(problems: list[str]) -> None:
    """Raise one ConfigError listing every problem on one line (the first few, then a count)."""
    if not problems:
        return
    shown = "; ".join(problems[:MAX_REPORTED])
    if len(problems) > MAX_REPORTED:
        shown += f"; and {len(problems) - MAX_REPORTED} more"
    raise ConfigError(shown)


def read_yaml(path: Path, display: str | None = None) -> tuple[Any, SourceMap]:
    """The data of one YAML file and its source map; ConfigError naming file:line on any problem."""
    name = display or str(path)
    text = _read_text(path, name)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = " ".join(part for part in (exc.context, exc.problem) if part) or "not valid YAML"
        raise ConfigError(f"{name}:{mark.line + 1 if mark else 1}: YAML syntax error: {reason}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name}:1: YAML syntax error: {exc}") from None
    finally:
        loader.dispose()
    source = SourceMap(name)
    if node is not None:
        problems: list[str] = []
        _record(node, (), source, problems, set())
        raise_problems(problems)
    return data, source


def _read_text(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file", hint="Check the path given with -f or --var-file") from None
    except IsADirectoryError:
        raise ConfigError(f"{name}: is a directory, not a YAML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{name}: is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{name}: cannot be read: {exc.strerror}") from None


def _record(node: Node, path: Path_, source: SourceMap, problems: list[str], on_stack: set[int]) -> None:
    source.lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in on_stack:  # a recursive alias: already recorded above us
        return
    on_stack.add(id(node))
    if isinstance(node, MappingNode):
        _record_mapping(node, path, source, problems, on_stack)
    elif isinstance(node, SequenceNode):
        for index, item in enumerate(node.value):
            _record(item, (*path, index), source, problems, on_stack)
    on_stack.discard(id(node))


def _record_mapping(node: MappingNode, path: Path_, source: SourceMap, problems: list[str], on_stack: set[int]) -> None:
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            continue  # merged keys keep the lines of the mapping they came from
        if not isinstance(key_node, ScalarNode):
            continue  # the schema rejects non-string keys with its own message
        key = str(key_node.value)
        child = (*path, key)
        if key in seen:
            problems.append(f"{source.file}:{key_node.start_mark.line + 1}: {dotted_path(child)}: duplicate key")
        seen.add(key)
        source.lines[child] = key_node.start_mark.line + 1
        _record(value_node, child, source, problems, on_stack)
