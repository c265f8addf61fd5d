"""Request bodies checked against the official Azure ML OpenAPI (Swagger 2.0) definitions.

`specs/<api-version>/*.json` hold a verbatim subset of Azure/azure-rest-api-specs (each file's
`x-source` names the path and commit; only documentation keys were dropped). A request is matched
to the operation whose path template fits, in the files of the api-version it names, and its JSON
body is validated against that operation's body schema the way Azure's own model validator (oav)
reads Swagger:

- `allOf` is inheritance: a model has its own properties plus its ancestors'; `additionalProperties:
  false` anywhere in the chain closes it, and a model that declares properties but no
  `additionalProperties` is closed too (an unknown field is an error, as the service rejects it);
- `discriminator` picks the subtype whose `x-ms-discriminator-value` (or name) equals the tag; a
  subtype not kept in the subset is reported as such, never silently accepted;
- `readOnly` properties may be sent and are ignored (ARM ignores them in a PUT);
- enums with `x-ms-enum.modelAsString: true` are extensible (any string), others are checked
  case-insensitively; `x-nullable` allows null; formats int32/int64/date-time/duration/uuid checked.

Written by hand: no maintained Python library validates Swagger 2.0 with Azure's discriminator and
`x-ms-*` conventions (openapi-core and openapi-schema-validator target OpenAPI 3).

ERRATA lists places where the published definition contradicts what the service demonstrably
accepts, each with its evidence; the schema there is replaced, nothing is skipped silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

SPECS = Path(__file__).with_name("specs")
Json = dict[str, Any]

# (api-version, definition, property) -> the schema that replaces the published one, and why.
ERRATA: dict[tuple[str, str, str], tuple[Json, str]] = {
    ("2024-04-01-preview", "WorkspaceConnectionPropertiesV2", "metadata"): (
        {"type": "object", "additionalProperties": {"type": "string"}},
        "declared an array of strings, but the same version's own example listSecrets.json returns "
        '`"metadata": {}`, azure-ai-ml sends a string map, and Prompt flow reads it as one '
        "(`azureml.flow.connection_type`)",
    ),
    ("2024-10-01-preview", "AssetJobOutput", "assetName"): (
        {"type": "string", "x-nullable": True},
        "not declared at this version, but it is how a fine-tuning job names the model it registers: "
        "azure-ai-ml 1.35's create_finetuning_job sends it (output_model_name_prefix), and the SDK's own "
        "REST model MLFlowModelJobOutput, generated from a later revision of these definitions, has it "
        "(wire name assetName)",
    ),
}

_DURATION = re.compile(r"^-?P(?=\d|T\d)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_INT_RANGE = {"int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1)}


@dataclass(frozen=True)
class Operation:
    api_version: str
    file: str
    template: str
    method: str
    spec: Json
    pattern: re.Pattern[str] = field(compare=False)


class SpecSet:
    """The spec files of every kept api-version, with $ref resolution across files."""

    def __init__(self, root: Path = SPECS) -> None:
        self.root = root
        self._docs: dict[Path, Json] = {}

    def doc(self, path: Path) -> Json:
        path = path.resolve()
        if path not in self._docs:
            self._docs[path] = json.loads(path.read_text(encoding="utf-8"))
        return self._docs[path]

    def api_versions(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and p.name[:1].isdigit())

    def operations(self, api_version: str) -> list[Operation]:
        folder = self.root / api_version
        found: list[Operation] = []
        if not folder.is_dir():
            return found
        for file in sorted(folder.glob("*.json")):
            for template, item in self.doc(file).get("paths", {}).items():
                regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
                pattern = re.compile(f"^{regex}$", re.IGNORECASE)
                for method, spec in item.items():
                    found.append(Operation(api_version, str(file), template, method.upper(), spec, pattern))
        return found

    def resolve(self, ref: str, base: Path) -> tuple[Json, Path, str]:
        """(schema, file it lives in, definition name) for a $ref made in `base`."""
        file_part, _, pointer = ref.partition("#")
        if not file_part:
            target = base
        elif "common-types/" in file_part:
            target = self.root / "common-types" / file_part.split("common-types/", 1)[1]
        else:
            target = base.parent / file_part
        node: Any = self.doc(target)
        for part in [p for p in pointer.split("/") if p]:
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"unresolved $ref {ref} (from {base.name}): not in the kept subset")
            node = node[part]
        return node, target.resolve(), pointer.rsplit("/", 1)[-1]


class RequestValidator:
    """`validate(method, path, api_version, body)` -> problems (empty when the service would accept)."""

    def __init__(self, specs: SpecSet) -> None:
        self.specs = specs
        self.uncovered: set[tuple[str, str, str]] = set()

    @classmethod
    def load(cls) -> RequestValidator:
        return cls(_spec_set())

    def find(self, method: str, path: str, api_version: str) -> Operation | None:
        for op in self.specs.operations(api_version):
            if op.method == method and op.pattern.match(path):
                return op
        return None

    def validate(self, method: str, path: str, api_version: str, body: Any) -> list[str]:
        op = self.find(method, path, api_version)
        if op is None:
            self.uncovered.add((method, api_version, path))
            if body is not None:
                return [f"no official definition kept for {method} {path} at api-version {api_version}"]
            return []
        params = [self._param(p, Path(op.file)) for p in op.spec.get("parameters", [])]
        problems = self._path_params(op, path, params)
        schema_param = next((p for p, _ in params if p and p.get("in") == "body"), None)
        if schema_param is None:
            if body is not None:
                problems.append(f"{op.spec.get('operationId')} takes no body")
            return problems
        if body is None:
            if schema_param.get("required"):
                problems.append("a body is required")
            return problems
        base = next(f for p, f in params if p is schema_param)
        problems += _Checker(self.specs, op.api_version).check(schema_param["schema"], body, base, "body")
        return problems

    def declared_status(self, method: str, path: str, api_version: str, status: int) -> bool:
        """Is `status` a response the operation declares (errors go to `default`)? True if not kept."""
        op = self.find(method, path, api_version)
        return op is None or status >= 400 or str(status) in op.spec.get("responses", {})

    def _param(self, param: Json, base: Path) -> tuple[Json | None, Path]:
        if "$ref" not in param:
            return param, base
        try:
            resolved, file, _ = self.specs.resolve(param["$ref"], base)
        except (KeyError, FileNotFoundError):
            return None, base  # a path parameter defined in a file not kept: not checked
        return resolved, file

    @staticmethod
    def _path_params(op: Operation, path: str, params: list[tuple[Json | None, Path]]) -> list[str]:
        segments = op.template.strip("/").split("/")
        actual = path.strip("/").split("/")
        values = {s[1:-1]: a for s, a in zip(segments, actual, strict=False) if s.startswith("{")}
        problems = []
        for param, _ in params:
            if not param or param.get("in") != "path":
                continue
            value = values.get(param["name"], "")
            pattern = param.get("pattern")
            if pattern and not re.search(pattern, value):
                problems.append(f"path parameter {param['name']}={value!r} does not match {pattern}")
        return problems


@lru_cache(maxsize=1)
def _spec_set() -> SpecSet:
    return SpecSet()


class _Checker:
    def __init__(self, specs: SpecSet, api_version: str) -> None:
        self.specs = specs
        self.api_version = api_version

    def check(self, schema: Json, value: Any, base: Path, where: str) -> list[str]:
        name = ""
        while "$ref" in schema:
            schema, base, name = self.specs.resolve(schema["$ref"], base)
        if value is None:
            return (
                []
                if schema.get("x-nullable") or schema.get("type") is None
                else [f"{where}: null not allowed"]
            )
        if self._is_object(schema):
            return self._object(schema, name, value, base, where)
        kind = schema.get("type")
        if kind == "array":
            if not isinstance(value, list):
                return [f"{where}: expected an array"]
            problems = []
            if len(value) < schema.get("minItems", 0):
                problems.append(f"{where}: at least {schema['minItems']} item(s) expected")
            for i, item in enumerate(value):
                problems += self.check(schema.get("items", {}), item, base, f"{where}[{i}]")
            return problems
        return _scalar(schema, value, where)

    @staticmethod
    def _is_object(schema: Json) -> bool:
        return schema.get("type") == "object" or "properties" in schema or "allOf" in schema

    def _chain(self, schema: Json, name: str, base: Path) -> list[tuple[Json, str, Path]]:
        """The model and its ancestors (allOf), nearest first."""
        chain = [(schema, name, base)]
        for parent in schema.get("allOf", []):
            resolved, file, parent_name = (
                self.specs.resolve(parent["$ref"], base) if "$ref" in parent else (parent, base, "")
            )
            chain += self._chain(resolved, parent_name, file)
        return chain

    def _discriminated(
        self, schema: Json, name: str, value: Json, base: Path, where: str
    ) -> tuple[Json, str, Path]:
        """The subtype `value`'s discriminator tag selects, or the model itself."""
        for model, model_name, file in self._chain(schema, name, base):
            tag_field = model.get("discriminator")
            if not tag_field or (model is not schema and model_name == name):
                continue
            tag = value.get(tag_field)
            if tag is None or tag == (schema.get("x-ms-discriminator-value") or name):
                return schema, name, base
            for sub_name, sub in self.specs.doc(file).get("definitions", {}).items():
                if (sub.get("x-ms-discriminator-value") or sub_name) == tag and self._inherits(
                    sub, file, model_name
                ):
                    if sub is schema:
                        return schema, name, base
                    return self._discriminated(sub, sub_name, value, file, where)
            omitted = self.specs.doc(file).get("x-source", {}).get("omitted", {})
            token = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(str(tag))}(?![A-Za-z0-9_])")
            if any(token.search(str(text)) for text in omitted.values()):
                raise _NotKept(
                    f"{where}: {tag_field}={tag!r} selects a subtype of {model_name} not kept in the subset"
                )
            raise _Invalid(f"{where}: {tag_field}={tag!r} is not a known {model_name} type")
        return schema, name, base

    def _inherits(self, schema: Json, base: Path, ancestor: str) -> bool:
        return any(n == ancestor for _, n, _ in self._chain(schema, "", base)[1:])

    def _object(self, schema: Json, name: str, value: Any, base: Path, where: str) -> list[str]:
        if not isinstance(value, dict):
            return [f"{where}: expected an object"]
        try:
            schema, name, base = self._discriminated(schema, name, value, base, where)
        except (_NotKept, _Invalid) as e:
            return [str(e)]
        properties: dict[str, tuple[Json, Path, str]] = {}
        required: set[str] = set()
        extra: Json | bool | None = None
        declared = False
        for model, model_name, file in reversed(self._chain(schema, name, base)):
            for prop, prop_schema in model.get("properties", {}).items():
                erratum = ERRATA.get((self.api_version, model_name, prop))
                properties[prop] = (erratum[0] if erratum else prop_schema, file, model_name)
                declared = True
            required.update(model.get("required", []))
            if "additionalProperties" in model:
                if model["additionalProperties"] is False:
                    extra = False
                elif extra is not False:
                    extra = model["additionalProperties"]
        for (version, model_name, prop), (erratum, _) in ERRATA.items():
            if (
                version == self.api_version
                and prop not in properties
                and any(n == model_name for _, n, _ in self._chain(schema, name, base))
            ):
                properties[prop] = (erratum, base, model_name)
        problems = [f"{where}.{r}: required" for r in sorted(required) if r not in value]
        for key, item in value.items():
            if key in properties:
                prop_schema, file, _ = properties[key]
                problems += self.check(prop_schema, item, file, f"{where}.{key}")
            elif isinstance(extra, dict):
                problems += self.check(extra, item, base, f"{where}.{key}")
            elif extra is True or (extra is None and not declared):
                continue
            else:
                problems.append(f"{where}.{key}: not a property of {name or 'this object'}")
        return problems


class _NotKept(Exception):
    pass


class _Invalid(Exception):
    pass


def _scalar(schema: Json, value: Any, where: str) -> list[str]:
    kind = schema.get("type")
    problems: list[str] = []
    if kind == "string":
        if not isinstance(value, str):
            return [f"{where}: expected a string, got {type(value).__name__}"]
        problems += _string_rules(schema, value, where)
    elif kind == "integer":
        if isinstance(value, bool) or not isinstance(value, int):
            return [f"{where}: expected an integer"]
        low, high = _INT_RANGE.get(schema.get("format", ""), (None, None))
        if low is not None and high is not None and not low <= value <= high:
            problems.append(f"{where}: {value} out of {schema['format']} range")
    elif kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return [f"{where}: expected a number"]
    elif kind == "boolean" and not isinstance(value, bool):
        return [f"{where}: expected a boolean"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: below minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: above maximum {schema['maximum']}")
    return problems


def _string_rules(schema: Json, value: str, where: str) -> list[str]:
    problems = []
    enum = schema.get("enum")
    extensible = (schema.get("x-ms-enum") or {}).get("modelAsString", False)
    if enum and not extensible and value.lower() not in {str(e).lower() for e in enum}:
        problems.append(f"{where}: {value!r} is not one of {enum}")
    if len(value) < schema.get("minLength", 0):
        problems.append(f"{where}: shorter than {schema['minLength']}")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{where}: longer than {schema['maxLength']}")
    if "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{where}: {value[:40]!r} does not match {schema['pattern']}")
    fmt = schema.get("format")
    checks = {"duration": _DURATION, "date-time": _DATE_TIME, "uuid": _UUID}
    if fmt in checks and not checks[fmt].match(value):
        problems.append(f"{where}: {value[:40]!r} is not a {fmt}")
    return problems
