"""Loading a policy file: YAML with positions, strict validation, compilation into an immutable Policy.

A policy is compiled once and evaluated many times. Its revision is the SHA-256 of the file's bytes, so an
auditor holding the file can check which policy a log record cites. Every error names the file, line and
key, and a policy that does not load is never partly applied (the caller keeps the old one or refuses to
start: fail closed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor

from gateway.policy.compiled import Policy, compile_spec
from gateway.policy.schema import PolicySpec

Location = tuple[int, int]
Path_ = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class PolicyIssue:
    file: str
    line: int
    column: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.key or '<top>'}: {self.message}"


class PolicyError(Exception):
    """A policy file that cannot be used; ``issues`` say where and why."""

    def __init__(self, issues: Iterable[PolicyIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def load_policy(path: str | Path) -> Policy:
    """Read, validate and compile one policy file (raises PolicyError)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PolicyError([PolicyIssue(str(path), 0, 0, "", f"cannot read: {exc.strerror}")]) from None
    except ValueError:  # a path no file can have (an embedded NUL)
        raise PolicyError([PolicyIssue(repr(str(path)), 0, 0, "", "cannot read: not a valid path")]) from None
    return parse_policy(raw, str(path))


def parse_policy(raw: bytes, name: str) -> Policy:
    data, positions = _compose(raw, name)
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_issues(exc, positions, name)) from None
    return compile_spec(spec, revision=hashlib.sha256(raw).hexdigest(), source=name)


def _compose(raw: bytes, name: str) -> tuple[Any, dict[Path_, Location]]:
    try:
        node = yaml.compose(raw.decode("utf-8"), Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = getattr(exc, "problem", None) or "not valid UTF-8 YAML"
        raise PolicyError([PolicyIssue(name, line, col, "", str(problem))]) from None
    if node is None:
        raise PolicyError([PolicyIssue(name, 1, 1, "", "the file is empty")])
    positions: dict[Path_, Location] = {}
    issues: list[PolicyIssue] = []
    data = _to_python(node, (), positions, issues, name)
    if issues:
        raise PolicyError(issues)
    return data, positions


def _to_python(
    node: yaml.Node, at: Path_, positions: dict[Path_, Location], issues: list[PolicyIssue], name: str
) -> Any:
    positions[at] = (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.MappingNode):
        return _mapping(node, at, positions, issues, name)
    if isinstance(node, yaml.SequenceNode):
        return [_to_python(n, (*at, i), positions, issues, name) for i, n in enumerate(node.value)]
    return SafeConstructor().construct_object(node, deep=True)


def _mapping(
    node: yaml.MappingNode, at: Path_, positions: dict[Path_, Location], issues: list[PolicyIssue], name: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in out:
            line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            issues.append(PolicyIssue(name, line, col, _dotted((*at, key)), "duplicate key"))
            continue
        out[key] = _to_python(value_node, (*at, key), positions, issues, name)
        # errors about a key point at the key, not at its value
        positions[(*at, key)] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
    return out


def _issues(exc: ValidationError, positions: dict[Path_, Location], name: str) -> Iterator[PolicyIssue]:
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
        line, col = _nearest(loc, positions)
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        yield PolicyIssue(name, line, col, _dotted(loc), message)


def _nearest(loc: Path_, positions: dict[Path_, Location]) -> Location:
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in positions:
            return positions[loc[:cut]]
    return (1, 1)


def _dotted(loc: Path_) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
