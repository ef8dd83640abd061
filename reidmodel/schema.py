"""Settings declared once: a pydantic base for settings models, and the one-line errors read off a declaration.

A setting is one field with its type, default, range or choices and a one-line help
(``eps: float = Field(1.0, gt=0, description="...")``); validation, the coercion of YAML and ``--set`` values,
"did you mean" hints and error messages all come from it, for the experiment config and the search-space files
alike. Values are checked strictly (a bool is true or false, a number is not a string), with the two conversions
YAML needs: a whole float (``3.0``) for an int, and a number for a text setting.
"""

from __future__ import annotations

import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from reidmodel.messages import suggest


class Settings(BaseModel):
    """Base of every settings model: strict types, unknown keys refused, finite numbers only."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def _whole_number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _number_as_text(value: Any) -> Any:
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


Int = Annotated[int, BeforeValidator(_whole_number)]
Text = Annotated[str, BeforeValidator(_number_as_text)]
# What numpy's and torch's seeding accept (numpy's legacy RandomState, Optuna's samplers: 0..2**32 - 1); a larger
# seed would fail inside the library ("Overflow when unpacking long long") without naming the key.
Seed = Annotated[Int, Field(ge=0, le=2**32 - 1)]

_TYPE_NAMES = {int: "int", float: "float", bool: "true|false", str: "text"}
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))  # pydantic's Field(gt=..., ...)
# pydantic error type -> (problem, fix), for errors whose text needs nothing but the field's declaration
_PROBLEMS = {
    "bool_type": ("is not true or false", "write true or false"),
    "int_type": ("is not an integer", "give a whole number"),
    "float_type": ("is not a number", "give a number such as 0.5 or 1e-5"),
    "finite_number": ("is not a finite number", "give a finite value"),
    "string_type": ("is not text", "give a single text value"),
    "list_type": ("is not a list", "give a list such as [a, b]"),
    "dict_type": ("is not a mapping", "give key: value pairs"),
    "model_type": ("is not a mapping", "give its settings as key: value pairs"),
    "model_attributes_type": ("is not a mapping", "give its settings as key: value pairs"),
    "too_short": ("is empty", "list at least one value"),
}


def bounds_text(field: FieldInfo | None, ctx: dict | None = None) -> str:
    """A field's range as written in errors and --help-config: '> 0', '>= 0, <= 1', or ''; the violated bound
    of an error's ``ctx`` for a value that is not a field of its own (an item of a list)."""
    found = [(attr, sign, getattr(item, attr)) for item in (field.metadata if field else [])
             for attr, sign in _BOUNDS if getattr(item, attr, None) is not None]
    if not found and ctx:
        found = [(attr, sign, ctx[attr]) for attr, sign in _BOUNDS if attr in ctx]
    return ", ".join(f"{sign} {_number_text(bound)}" for _, sign, bound in found)


def _number_text(number: Any) -> str:
    """A bound as a reader writes it: 0.5, 1e-05, 4294967295 (an int in full, not 4.29497e+09)."""
    return str(number) if isinstance(number, int) else f"{number:g}"


def choices(annotation: Any) -> tuple:
    """The values a Literal anywhere in a type allows (also inside a list or an Optional), else ()."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    return next((found for arg in get_args(annotation) if (found := choices(arg))), ())


def type_text(field: FieldInfo) -> str:
    """What a field takes, as --help-config shows it: 'float >= 0, <= 1', 'euclidean|jaccard',
    'list of conv3|conv4|conv5', 'int >= 1 or null'."""
    annotation = _members(field.annotation)[0]
    names = choices(annotation)
    if get_origin(annotation) is list:
        text = "list of " + ("|".join(map(str, names)) or _TYPE_NAMES.get(_members(_item(annotation))[0], "values"))
    else:
        text = "|".join(map(str, names)) or " ".join(filter(None, (_TYPE_NAMES.get(annotation, "value"),
                                                                 bounds_text(field))))
    optional = get_origin(field.annotation) in (Union, types.UnionType) and type(None) in get_args(field.annotation)
    return f"{text} or null" if optional else text


def error_line(exc: ValidationError, model: type[BaseModel], noun: str = "key") -> str:
    """The first problem pydantic found, as one line naming the dotted field, the value, what is allowed and
    the fix (``noun`` names what an unknown key is: 'config key', 'key')."""
    error = exc.errors(include_url=False)[0]
    name, field, parent, annotation = _locate(model, error["loc"])
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx", {})
    if kind == "extra_forbidden":
        key = str(error["loc"][-1])
        return f"unknown {noun} {name!r}: {suggest(key, parent.model_fields, name[: -len(key)])}"
    if kind == "missing":
        return f"{name} is missing: give it ({_help(field)})" if field else f"{name} is missing"
    if kind in ("value_error", "assertion_error"):
        message = str(ctx.get("error", error["msg"]))  # a validator's own text: problem and fix
        if not name:
            return message
        return f"{name}={value!r} {message}" if _echoed(value) else f"{name}: {message}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):  # the key that picks a member of a tagged union
        tag = ctx["discriminator"].strip("'")
        tags = ", ".join(t for member in _members(annotation) for t in _tag_of(member))
        if "tag" not in ctx:
            return f"{name}.{tag} is missing: give one of {tags}"
        return f"{name}.{tag}={ctx['tag']!r} is not allowed: use one of {tags}"
    what = f"{name}={value!r}" if _echoed(value) else name
    if kind == "literal_error" and field is not None:
        problem, fix = "is not allowed", f"use one of {', '.join(map(str, choices(field.annotation)))}"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        problem, fix = f"is out of range ({bounds_text(field, ctx)})", "give a value in that range"
    elif kind == "string_too_long":
        problem, fix = f"is {len(value):,} characters long", f"shorten it to at most {ctx['max_length']:,}"
    else:
        problem, fix = _PROBLEMS.get(kind, (f"is not allowed ({error['msg'][0].lower()}{error['msg'][1:]})",
                                            "fix the value"))
    return f"{what} {problem}: {fix}" + (f" - {_help(field)}" if _help(field) else "")


def yaml_schema(model: type[BaseModel], indent: str = "", column: int = 36) -> list[str]:
    """A settings model's keys as YAML, each with what it takes, its default and its help from ``column`` on: a
    file format's documentation read off its declaration (a list of settings shown as one ``- `` item, a mapping
    of them as ``KEY:`` once per kind)."""
    lines = []
    for key, field in model.model_fields.items():
        shape, members = _settings_inside(field.annotation)
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        shown = "" if shape or default in (None, "", [], {}) else f"; default: {_flow_yaml(default)}"
        takes = "mapping" if get_origin(_members(field.annotation)[0]) is dict else type_text(field)
        head = f"{indent}{key}:" + ("" if shape else f" {takes}")
        lines.append(_commented(head, (field.description or "") + shown, column))
        for member in members:
            if shape == "dict":
                lines.append(_commented(f"{indent}  KEY:", member.__doc__ or "", column))
            nested = yaml_schema(member, indent + ("  " if shape == "model" else "    "), column)
            if shape == "list":
                nested[0] = f"{indent}  - {nested[0].lstrip()}"
            lines += nested
    return lines


def _settings_inside(annotation: Any) -> tuple[str, list[type[BaseModel]]]:
    """("model" | "list" | "dict", the settings models) for a field that holds settings, else ("", [])."""
    annotation = _members(annotation)[0]
    shape = {list: "list", dict: "dict"}.get(get_origin(annotation), "model")
    members = [annotation] if shape == "model" else _members(_item(annotation))
    found = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
    return (shape, found) if found else ("", [])


def _commented(head: str, comment: str, column: int) -> str:
    return f"{head:<{column}} # {comment}" if comment else head


def _flow_yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).removesuffix("...\n").strip()


def _locate(model: type[BaseModel], loc: tuple) -> tuple[str, FieldInfo | None, type[BaseModel], Any]:
    """An error's location as a dotted name ('ula.eps', 'variants[2].set'), the field it names, the settings
    model it lies in and the type found there. A tagged union's tag in the location (the member pydantic chose)
    is not named."""
    name, field, parent, annotation = "", None, model, model
    for part in loc:
        members = _members(annotation)
        tagged = [m for m in members if isinstance(part, str) and part in _tag_of(m)]
        if tagged:
            annotation = tagged[0]
            continue
        annotation = members[0]
        if isinstance(part, int):
            name, annotation = f"{name}[{part}]", _item(annotation)
            continue
        name = f"{name}.{part}" if name else str(part)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            annotation = _item(annotation)
            continue
        parent, field = annotation, annotation.model_fields.get(part)
        if field is None:  # an unknown key
            break
        annotation = field.annotation
    return name, field, parent, annotation


def _members(annotation: Any) -> list:
    """A type without Annotated and None: the members of a union, else the type alone."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, types.UnionType):
        return [_members(arg)[0] for arg in get_args(annotation) if arg is not type(None)]
    return [annotation]


def _tag_of(annotation: Any) -> tuple:
    """The Literal values of a settings model's ``type`` field (its tag in a tagged union), else ()."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and "type" in annotation.model_fields:
        return choices(annotation.model_fields["type"].annotation)
    return ()


def _item(annotation: Any) -> Any:
    """The element type of a list or the value type of a dict, else the type itself."""
    args = get_args(annotation)
    return args[-1] if get_origin(annotation) in (list, dict, tuple) and args else annotation


def _echoed(value: Any) -> bool:
    """A value short enough to repeat in an error: not a mapping nor a list of mappings, nor a long text."""
    items = value if isinstance(value, list) else [value]
    return not any(isinstance(item, dict) or (isinstance(item, str) and len(item) > 200) for item in items)


def _help(field: FieldInfo | None) -> str:
    return (field.description or "").rstrip(".") if field is not None else ""
