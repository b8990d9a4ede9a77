"""Generate the CustomResourceDefinitions from the pydantic models.

``make crds`` runs ``python -m tradewarden.api.crds``, which writes ``crds/*.yaml`` and the chart's CRD
templates. A test regenerates them and fails when the committed YAML drifts, so the models stay the
single source of truth. The JSON schema pydantic emits is rewritten into a Kubernetes *structural*
schema: references inlined, ``Optional`` unwrapped, titles dropped, free-form maps marked.
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from tradewarden.api.base import DATE_TIME_PATTERN, GROUP, VERSION
from tradewarden.api.gateoverride import GATE_OVERRIDE, GateOverrideSpec, GateOverrideStatus
from tradewarden.api.killswitch import KILL_SWITCH, KillSwitchSpec, KillSwitchStatus
from tradewarden.api.meta import ResourceInfo
from tradewarden.api.strategyconfig import STRATEGY_CONFIG, StrategyConfigSpec, StrategyConfigStatus
from tradewarden.api.tradingbot import TRADING_BOT, TradingBotSpec, TradingBotStatus

#: Every kind: its resource facts, spec model and status model.
KINDS: tuple[tuple[ResourceInfo, type[BaseModel], type[BaseModel]], ...] = (
    (STRATEGY_CONFIG, StrategyConfigSpec, StrategyConfigStatus),
    (TRADING_BOT, TradingBotSpec, TradingBotStatus),
    (KILL_SWITCH, KillSwitchSpec, KillSwitchStatus),
    (GATE_OVERRIDE, GateOverrideSpec, GateOverrideStatus),
)

_DROP_KEYS = {"title", "additionalProperties", "$defs", "discriminator"}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref``s and rewrite pydantic idioms into structural-schema idioms, recursively."""
    if isinstance(node, list):
        return [_resolve(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = copy.deepcopy(defs[node.pop("$ref").split("/")[-1]])
        target.update(node)  # a field's own description and default win over the model's
        node = target
    # Optional[X] arrives as anyOf [X, null]: keep X (absent means None; we never send null).
    any_of = node.get("anyOf")
    if any_of and not node.get("x-kubernetes-int-or-string"):
        non_null = [s for s in any_of if s.get("type") != "null"]
        if len(non_null) == 1:
            del node["anyOf"]
            merged = dict(non_null[0])
            merged.update({k: v for k, v in node.items() if k != "default" or v is not None})
            return _resolve(merged, defs)
    # OpenAPI v3.0 (what Kubernetes speaks) has boolean exclusive bounds beside minimum/maximum.
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(exclusive), int | float) and not isinstance(node.get(exclusive), bool):
            node[bound] = node.pop(exclusive)
            node[exclusive] = True
    if node.get("default", 0) is None:
        del node["default"]
    if "const" in node:
        node["enum"] = [node.pop("const")]
    add = node.get("additionalProperties")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            out[key] = {k: _resolve(v, defs) for k, v in value.items()}
        elif key in ("items", "anyOf", "allOf", "oneOf", "not"):
            out[key] = _resolve(value, defs)
        else:
            out[key] = value
    if node.get("type") == "object" and "properties" not in node:
        if isinstance(add, dict) and add:
            out["additionalProperties"] = _resolve(add, defs)
        elif not out.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    if out.get("format") == "date-time" and "pattern" not in out:
        # A plain ``datetime`` field (not base.DateTime, e.g. a condition's lastTransitionTime): the API
        # server's date-time format alone admits values pydantic refuses (an offset of +25:00).
        out["pattern"] = DATE_TIME_PATTERN
    return out


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema as a Kubernetes structural OpenAPI v3 schema."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    _default_empty_objects(schema, model)
    return schema


def _default_empty_objects(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Give sub-objects with a default factory ``default: {}`` so the API server fills their defaults.

    With that, ``kubectl get -o yaml`` shows every effective risk limit, not only the ones the user set.
    """
    for name, field in model.model_fields.items():
        alias = field.alias or name
        prop = schema.get("properties", {}).get(alias)
        if prop is None:
            continue
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if field.default_factory is not None and not field.is_required():
                prop["default"] = {}
            _default_empty_objects(prop, ann)


def build_crd(info: ResourceInfo, spec_model: type[BaseModel], status_model: type[BaseModel]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    spec = structural_schema(spec_model)
    if info.spec_validations:
        spec["x-kubernetes-validations"] = [dict(v) for v in info.spec_validations]
    spec_required = info.kind != "KillSwitch"
    status = structural_schema(status_model)
    root: dict[str, Any] = {
        "type": "object",
        "description": info.description,
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion of this object."},
            "kind": {"type": "string", "description": "Kind of this object."},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    if info.root_validations:
        root["x-kubernetes-validations"] = [dict(v) for v in info.root_validations]
    if spec_required:
        root["required"] = ["spec"]
    else:
        root["properties"]["spec"]["default"] = {}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": list(info.categories),
            },
            "scope": info.scope,
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [c.to_wire() for c in info.printer_columns],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    return [build_crd(info, spec, status) for info, spec, status in KINDS]


HEADER = "# Generated by `make crds` from tradewarden.api; do not edit by hand.\n"


def render(crd: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(crd, sort_keys=False, width=120)


def render_chart_template(crd: dict[str, Any]) -> str:
    """The chart's copy: behind ``crds.install`` and kept on ``helm uninstall`` when ``crds.keep``."""
    body = copy.deepcopy(crd)
    text = yaml.safe_dump(body, sort_keys=False, width=120)
    meta_line = f"metadata:\n  name: {crd['metadata']['name']}\n"
    annotated = meta_line + (
        "  annotations:\n"
        "    {{- if .Values.crds.keep }}\n"
        "    helm.sh/resource-policy: keep\n"
        "    {{- end }}\n"
        '    argocd.argoproj.io/sync-wave: "-10"\n'
        "  labels:\n"
        "    {{- include \"tradewarden.labels\" . | nindent 4 }}\n"
    )
    text = text.replace(meta_line, annotated, 1)
    return HEADER + "{{- if .Values.crds.install }}\n" + text + "{{- end }}\n"


def expected_files(root: pathlib.Path) -> dict[pathlib.Path, str]:
    """Every generated file and its content, relative to the repository root."""
    files: dict[pathlib.Path, str] = {}
    for crd in all_crds():
        plural = crd["spec"]["names"]["plural"]
        files[root / "crds" / f"{GROUP}_{plural}.yaml"] = render(crd)
        files[root / "charts" / "tradewarden" / "templates" / "crds" / f"{plural}.yaml"] = render_chart_template(crd)
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the tradewarden CRDs from the API models.")
    parser.add_argument("--root", default=".", help="Repository root (default: the current directory).")
    parser.add_argument("--check", action="store_true", help="Fail if the files on disk differ.")
    args = parser.parse_args(argv)
    root = pathlib.Path(args.root)
    stale = []
    for path, content in expected_files(root).items():
        current = path.read_text() if path.exists() else None
        if current == content:
            continue
        if args.check:
            stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path}")
    if stale:
        print("CRDs are out of date with the models; run `make crds`:\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
