"""The policy reference, generated from the schema itself: ``python -m gateway.policy.reference``.

docs/policy-reference.md is this module's output; a test fails when the two differ, so the reference
always says what the loader accepts.
"""

from __future__ import annotations

import sys
import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from gateway.policy.schema import PolicySpec

INTRO = """\
# Policy file reference

Generated from `gateway/policy/schema.py` by `python -m gateway.policy.reference`; do not edit by hand.

A policy is a YAML file in `policies/`. Unknown or misspelt keys are errors that name the file, line and key;
values are not coerced (`"60"` is not a number). `consent-gateway policy check FILE` validates a file and
`consent-gateway policy test` runs the test cases in `policies/tests/`. The policy's revision is the SHA-256
of the file's bytes; every ledger and decision record carries it. Decisions cite the keys below as rule ids.
"""


def render() -> str:
    out = [INTRO]
    _section(out, "Top level", "", PolicySpec)
    return "\n".join(out)


def _section(out: list[str], title: str, prefix: str, model: type[BaseModel]) -> None:
    out += [f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        key = prefix + name
        out.append(f"| `{key}` | {_type(info.annotation)} | {_default(info)} | {_doc(info)} |")
        child = _model_in(info.annotation)
        if child is not None:
            nested.append((key, child))
    out.append("")
    for key, child in nested:
        suffix = "[]." if _is_list(model.model_fields[key.rsplit(".", 1)[-1]].annotation) else "."
        if _is_dict(model.model_fields[key.rsplit(".", 1)[-1]].annotation):
            suffix = ".<name>."
        _section(out, f"`{key}`", key + suffix, child)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    return get_origin(annotation) is list


def _is_dict(annotation: Any) -> bool:
    return get_origin(annotation) is dict


def _type(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin is typing.Annotated:
        return _type(get_args(annotation)[0])
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type(a) for a in get_args(annotation))
    if origin is list:
        return f"list of {_type(get_args(annotation)[0])}"
    if origin is dict:
        return f"map of name to {_type(get_args(annotation)[1])}"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{value!r}`" if value not in ([], {}) else "empty"


def _doc(info: FieldInfo) -> str:
    return " ".join((info.description or "").split()).replace("|", "\\|")


if __name__ == "__main__":
    sys.stdout.write(render())
