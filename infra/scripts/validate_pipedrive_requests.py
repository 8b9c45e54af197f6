#!/usr/bin/env python3
"""Checks recorded Pipedrive API requests against Pipedrive's official OpenAPI specs.

Usage: validate_pipedrive_requests.py REQUESTS.json [--specs DIR]

REQUESTS.json is a list of request records as the crm-sim Pipedrive simulator logs them
(`method`, `path`, `query`, `body`, `raw_body`, `auth`, ...). Requests under `/api/v2/` are checked
against `openapi-v2.yaml`, requests under `/api/v1/` against `openapi-v1.yaml` (DIR defaults to
`infra/specs/pipedrive`, the vendored copies). Each request must match a path and method of the
spec; its path and query parameters and JSON body must validate (openapi-core); every query
parameter must be one the operation declares; every body property must be one the schema
declares (strict: an object schema that lists `properties` is closed unless it says
`additionalProperties`; see BODY_ALLOW_LIST for the documented exceptions); and it must
authenticate the way the specs declare (`x-api-token` header or OAuth bearer, never the legacy
`api_token` query parameter).

Prints one line per request and exits 0 when all validate, 1 when any does not, 2 when it cannot
run at all.
"""

import argparse
import json
import os
import sys
import warnings
from urllib.parse import parse_qsl

try:
    import yaml
    from openapi_core import Config, OpenAPI
    from openapi_core.templating.paths.finders import APICallPathFinder
    from openapi_core.testing import MockRequest
except ImportError as e:  # pragma: no cover - reported to the caller
    print(f"cannot import the validator's dependencies: {e}", file=sys.stderr)
    sys.exit(2)

warnings.filterwarnings("ignore", message="Unsupported scheme type")

SPEC_HOST = "https://api.pipedrive.com"
# Our path prefix -> (spec file, the spec server's path prefix).
VERSIONS = {
    "/api/v2/": ("openapi-v2.yaml", "/api/v2/"),
    "/api/v1/": ("openapi-v1.yaml", "/v1/"),
}
ALLOWED_AUTH = {"x-api-token": {"x-api-token": "validator"}, "oauth bearer": {"Authorization": "Bearer validator"}}

# Body properties that Pipedrive's developer documentation declares but the request schema of the
# official spec lacks. Keyed by (spec file, method, path pattern, location in the body as a JSON
# pointer); everything not listed here and not in the schema is a violation.
BODY_ALLOW_LIST = {
    # Pipedrive's "Pipedrive API v1 to v2 migration guide" (Persons): "Either `name` or both
    # `first_name` and `last_name` must be provided ... If `first_name` and `last_name` are
    # provided, `name` is created by concatenating these." The v2 addPerson / updatePerson
    # request schemas list only `name`.
    ("openapi-v2.yaml", "post", "/persons", ""): {"first_name", "last_name"},
    ("openapi-v2.yaml", "patch", "/persons/{id}", ""): {"first_name", "last_name"},
}


def load(specs_dir, name):
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with open(os.path.join(specs_dir, name), encoding="utf-8") as f:
        data = yaml.load(f, Loader=loader)
    return data, OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))


def declared_query_params(spec, path_pattern, method):
    item = spec["paths"][path_pattern]
    params = list(item.get("parameters", [])) + list(item[method].get("parameters", []))
    names = set()
    for p in params:
        if "$ref" in p:
            node = spec
            for part in p["$ref"].lstrip("#/").split("/"):
                node = node[part]
            p = node
        if p.get("in") == "query":
            names.add(p["name"])
    return names


def find_pattern(spec, api, url, method):
    finder = APICallPathFinder(api.spec)
    path, _operation, _server, _path_result, _server_result = finder.find(method, url)
    return path.name if hasattr(path, "name") else path.parts[-1]


def resolve(spec, node):
    while isinstance(node, dict) and "$ref" in node:
        target = spec
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def branches(spec, schema):
    """The schema and every allOf/anyOf/oneOf branch inside it, references resolved."""
    schema = resolve(spec, schema)
    if not isinstance(schema, dict):
        return []
    out = [schema]
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            out.extend(branches(spec, sub))
    return out


def undeclared(spec, schema, value, pointer, allowed):
    """Body properties that no branch of `schema` declares, as JSON pointers."""
    found = []
    parts = branches(spec, schema)
    if isinstance(value, dict):
        declared = set()
        open_map = False
        closed = False
        for b in parts:
            if "properties" in b:
                closed = True
                declared |= set(b["properties"])
            if b.get("additionalProperties") not in (None, False):
                open_map = True
        declared |= allowed.get(pointer, set())
        for key, item in value.items():
            if closed and not open_map and key not in declared:
                found.append(f"{pointer}/{key}")
                continue
            subs = [b["properties"][key] for b in parts if key in b.get("properties", {})]
            for sub in subs:
                found.extend(undeclared(spec, sub, item, f"{pointer}/{key}", allowed))
    elif isinstance(value, list):
        subs = [b["items"] for b in parts if "items" in b]
        for i, item in enumerate(value):
            for sub in subs:
                found.extend(undeclared(spec, sub, item, f"{pointer}/{i}", allowed))
    return sorted(set(found))


def body_schema(spec, pattern, method):
    body = spec["paths"][pattern][method].get("requestBody")
    if body is None:
        return None
    content = resolve(spec, body).get("content", {})
    media = content.get("application/json")
    return None if media is None else media.get("schema")


def describe(error):
    parts = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__
    while cause is not None:
        for sub in getattr(cause, "schema_errors", None) or []:
            parts.append(getattr(sub, "message", str(sub)))
        cause = cause.__cause__
    return " | ".join(parts)


def check(record, specs):
    """Returns None when the request validates, else the reason."""
    method = str(record.get("method", "")).lower()
    path = str(record.get("path", ""))
    prefix = next((p for p in VERSIONS if path.startswith(p)), None)
    if prefix is None:
        return f"not an /api/v1 or /api/v2 path: {path}"
    spec_name, server_prefix = VERSIONS[prefix]
    spec, api = specs[spec_name]
    spec_path = server_prefix + path[len(prefix):]
    auth = record.get("auth")
    if auth not in ALLOWED_AUTH:
        return f"authenticated by {auth!r}; the specs declare the x-api-token header or OAuth bearer"
    query = parse_qsl(record.get("query") or "", keep_blank_values=True)
    if record.get("raw_body") is not None:
        return "body is not JSON"
    body = record.get("body")
    data = None if body is None else json.dumps(body).encode()
    args = {}
    for k, v in query:
        args.setdefault(k, v)
    request = MockRequest(
        SPEC_HOST,
        method,
        spec_path,
        args=args,
        data=data,
        headers=ALLOWED_AUTH[auth],
    )
    try:
        api.validate_request(request)
    except Exception as e:  # noqa: BLE001 - every validation problem is a mismatch
        return describe(e)
    if len(args) != len(query):
        return "a query parameter is repeated"
    try:
        pattern = find_pattern(spec, api, SPEC_HOST + spec_path, method)
    except Exception as e:  # noqa: BLE001
        return describe(e)
    declared = declared_query_params(spec, pattern, method)
    unknown = sorted(set(args) - declared)
    if unknown:
        return f"query parameters not in the spec for {method.upper()} {pattern}: {', '.join(unknown)}"
    schema = body_schema(spec, pattern, method)
    if body is not None and schema is not None:
        allowed = {
            pointer: names
            for (file, m, p, pointer), names in BODY_ALLOW_LIST.items()
            if (file, m, p) == (spec_name, method, pattern)
        }
        extra = undeclared(spec, schema, body, "", allowed)
        if extra:
            return f"body properties not in the spec for {method.upper()} {pattern}: {', '.join(extra)}"
    return None


def main():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("requests")
    ap.add_argument("--specs", default=os.path.join(root, "infra", "specs", "pipedrive"))
    a = ap.parse_args()
    try:
        with open(a.requests, encoding="utf-8") as f:
            records = json.load(f)
        specs = {name: load(a.specs, name) for name, _ in VERSIONS.values()}
    except Exception as e:  # noqa: BLE001
        print(f"cannot run: {e}", file=sys.stderr)
        return 2
    if not isinstance(records, list) or not records:
        print("cannot run: no requests to check", file=sys.stderr)
        return 2
    failed = 0
    for i, r in enumerate(records):
        reason = check(r, specs)
        line = f"{r.get('method')} {r.get('path')}{'?' + r['query'] if r.get('query') else ''}"
        if reason is None:
            print(f"ok   #{i} {line}")
        else:
            failed += 1
            print(f"FAIL #{i} {line}: {reason}")
    print(f"{len(records) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
