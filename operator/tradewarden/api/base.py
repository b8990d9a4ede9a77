"""The pydantic base for every wire model: camelCase on the wire, snake_case in Python.

Everything under ``tradewarden.api`` derives from :class:`WireModel`. The CRD generator
(:mod:`tradewarden.api.crds`) reads these models, so a field's ``description`` becomes its
``kubectl explain`` text and its bounds become the API server's validation.

The rule for every constraint here: the schema must never admit a value the model refuses. Two regex
engines are involved, the API server's (Go ``regexp``, RE2 syntax, in ``pattern`` and in CEL's
``matches``) and pydantic's (Rust ``regex`` for ``pattern``; Python ``re`` in the checks below). They
disagree on ``\\d``, ``\\s``, ``\\w`` and ``\\b`` (ASCII in RE2, Unicode in the other two), so patterns
here spell every class out (``[0-9]``, ``[A-Za-z]``) and never use those shorthands. :class:`Rule` says a
constraint once and emits it twice: as a CEL rule for the API server and as a check for the model.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

#: The API group and version of every tradewarden custom resource.
GROUP = "tradewarden.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


class WireModel(BaseModel):
    """Base of all spec/status models.

    ``extra="forbid"`` makes a typo in a manifest an error in the operator as well, although the API
    server's strict field validation usually catches it first.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=False,
        validate_default=True,
        # Secrets never leave Secrets (DESIGN.md invariant 5): a validation error names the field and the
        # rule, never the value (which may be a URL with a password in it, or a key pasted by mistake).
        hide_input_in_errors=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """Serialise as the API server stores it: camelCase keys, JSON types, no unset optionals."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """One validation rule, stated once: a CEL expression for the API server and a check for the model.

    ``expr`` is CEL over the placeholder ``SELF`` (``self`` for a field's own value, a loop variable
    for map keys); ``check`` is the same rule in Python and must agree with it on every input (tested
    in tests/unit/test_api_models.py). Used as ``Annotated[str, ..., rule]`` it validates a field and
    adds an ``x-kubernetes-validations`` entry to its schema. The API server reports a failing CEL rule
    as ``<field>: Invalid value: "string": <message>``: unlike a ``pattern``, it never echoes the value.
    """

    expr: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: str | None = None

    def cel(self, var: str = "self") -> str:
        return self.expr.replace("SELF", var)

    def to_wire(self, var: str = "self") -> dict[str, str]:
        out = {"rule": self.cel(var), "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        if self.reason:
            out["reason"] = self.reason
        return out

    def validate(self, value: Any) -> Any:
        if not self.check(value):
            raise PydanticCustomError("tradewarden_rule", self.message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        out.setdefault("x-kubernetes-validations", []).append(self.to_wire())
        return out


#: Regex shorthands whose meaning differs between RE2 (ASCII) and Python's re / Rust's regex (Unicode).
RE2_PYTHON_DIFFER = ("\\d", "\\s", "\\w", "\\b", "\\D", "\\S", "\\W", "\\B")


def matching(pattern: str, message: str, **kwargs: Any) -> Rule:
    """A :class:`Rule` that the whole string matches ``pattern`` (anchored, RE2 and Python alike)."""
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"{pattern}: anchor the pattern (CEL's matches() searches)")
    if "'" in pattern:
        raise ValueError(f"{pattern}: the pattern goes into a single-quoted CEL raw string")
    for shorthand in RE2_PYTHON_DIFFER:
        if shorthand in pattern:
            raise ValueError(f"{pattern}: {shorthand} means different things in RE2 and Python")
    compiled = re.compile(pattern)
    return Rule(expr=f"SELF.matches(r'{pattern}')", message=message,
                check=lambda v: isinstance(v, str) and compiled.fullmatch(v) is not None, **kwargs)


@dataclass(frozen=True)
class EachKey:
    """Applies a string :class:`Rule` to every key of a map (structural schemas cannot constrain keys)."""

    rule: Rule

    def validate(self, value: Any) -> Any:
        if isinstance(value, dict) and not all(self.rule.check(k) for k in value):
            raise PydanticCustomError("tradewarden_rule", self.rule.message)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.validate, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        out = handler(schema)
        wire = {"rule": f"self.all(k, {self.rule.cel('k')})", "message": self.rule.message}
        out.setdefault("x-kubernetes-validations", []).append(wire)
        return out


def model_rules(*rules: Rule) -> dict[str, Any]:
    """``json_schema_extra`` for a model whose :class:`Rule`\\ s read several of its fields.

    The model checks them with :func:`check_model_rules` in a ``model_validator(mode="after")``.
    """
    return {"x-kubernetes-validations": [r.to_wire() for r in rules]}


def check_model_rules(model: BaseModel, rules: tuple[Rule, ...]) -> None:
    for rule in rules:
        if not rule.check(model):
            raise ValueError(rule.message)


# ------------------------------------------------------------------------------------- date-times

#: RFC 3339 date-time as both sides accept it. The API server's ``format: date-time`` alone admits
#: offsets such as ``+25:00``, any character before the fraction, lower-case ``t``/``z`` and year 0000;
#: pydantic refuses all of those and accepts forms the API server refuses (a space for ``T``, no
#: offset, Unix seconds). This pattern is the part both accept, upper-case ``T`` and ``Z`` only, years
#: 1000-8999 so that no offset or added duration leaves Python's datetime range. Day-of-month
#: validity (no April 31) is checked by the format on one side and the parser on the other.
DATE_TIME_PATTERN = (
    r"^[1-8][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_DATE_TIME = re.compile(DATE_TIME_PATTERN)
DATE_TIME_MESSAGE = ("must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z or 2026-01-01T05:30:00+05:30 "
                     "(upper-case T and Z, an offset of at most 23:59, years 1000-8999)")


def _date_time_string(value: Any) -> Any:
    """Only RFC 3339 strings (as the schema admits them) or datetime objects; no Unix seconds, no naive times."""
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _DATE_TIME.fullmatch(value):
        return value
    raise PydanticCustomError("tradewarden_date_time", DATE_TIME_MESSAGE)


#: A date-time field: an aware ``datetime`` in Python, an RFC 3339 string with an offset on the wire.
DateTime = Annotated[
    dt.datetime,
    BeforeValidator(_date_time_string),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": DATE_TIME_PATTERN}),
]


# ---------------------------------------------------------------------------- visible characters

#: Characters that never show: every separator (Z*), control, format, surrogate and private-use
#: character (C*), combining marks on their own (M*), plus the blank letters and symbols (Hangul
#: fillers, Braille blank) and the reserved default-ignorable ranges. The API server's Go tables
#: (Unicode 15) count unassigned code points as C; Python 3.11's (Unicode 14) cannot tell them from the
#: characters Unicode 15 added, so the model counts them as visible and the schema alone refuses them.
_BLANK_LETTERS = "\\x{115F}\\x{1160}\\x{2800}\\x{3164}\\x{FFA0}\\x{FFF0}-\\x{FFF8}\\x{E0000}-\\x{E0FFF}"
_BLANK_RANGES = ((0x115F, 0x1160), (0x2800, 0x2800), (0x3164, 0x3164), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
                 (0xE0000, 0xE0FFF))
#: RE2 (the API server): one character that is none of the above.
VISIBLE_CEL_PATTERN = "[^\\p{Z}\\p{C}\\p{M}" + _BLANK_LETTERS + "]"


def is_visible_char(ch: str) -> bool:
    code = ord(ch)
    if any(lo <= code <= hi for lo, hi in _BLANK_RANGES):
        return False
    category = unicodedata.category(ch)
    return category == "Cn" or category[0] not in "ZCM"


def has_visible_char(value: Any) -> bool:
    """True when ``value`` has at least one character a human can see (not only spaces or zero-widths)."""
    return isinstance(value, str) and any(is_visible_char(ch) for ch in value)


def visible(what: str) -> Rule:
    """The rule that ``what`` contains at least one visible character."""
    return Rule(expr=f"SELF.matches(r'{VISIBLE_CEL_PATTERN}')",
                message=f"{what} must contain a visible character, not only spaces or invisible "
                        "(zero-width, format or control) characters",
                check=has_visible_char)


# ------------------------------------------------------------------------------------------ names

#: A DNS-1123 label: what Kubernetes requires of namespace names and label-like object names.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


def Name(description: str, **kwargs: Any) -> Any:
    """A Kubernetes object name (DNS-1123 subdomain), bounded so CEL cost estimation stays small."""
    return Field(
        description=description,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        **kwargs,
    )


#: Kubernetes' quantity syntax (``resource.Quantity``) without a minus sign: ``100m``, ``1.5``, ``256Mi``, ``1e3``.
QUANTITY_PATTERN = (r"^[+]?([0-9]+([.][0-9]*)?|[.][0-9]+)"
                    r"([KMGTPE]i|[numkMGTPE]|[eE][+-]?([0-9]+([.][0-9]*)?|[.][0-9]+))?$")
_QUANTITY = re.compile(QUANTITY_PATTERN)


def _quantity(value: Any) -> Any:
    if isinstance(value, str) and not _QUANTITY.fullmatch(value):
        raise PydanticCustomError("tradewarden_quantity",
                                  "must be a resource quantity such as 100m, 1, 1.5 or 256Mi")
    return value


#: A resource quantity such as ``100m``, ``1``, or ``256Mi``: an integer or a string on the wire.
Quantity = Annotated[
    int | str,
    BeforeValidator(_quantity),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "pattern": QUANTITY_PATTERN}),
]

#: Free-form JSON object kept as the user wrote it (validated elsewhere, e.g. strategy params).
FreeForm = Annotated[
    dict[str, Any],
    WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
]
