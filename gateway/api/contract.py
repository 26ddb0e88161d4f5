"""The OpenAPI document: FastAPI's generation, completed with what the gateway does around the routes.

The routes declare their own problem types (`problems.responses(...)`); what every route shares is added
here, from the same facts the middleware acts on: authentication and roles (gateway.api.auth), the body limit
and JSON parsing (gateway.api.problems), Idempotency-Key on client POSTs (gateway.api.idempotency), 405 with
`Allow`, 503 while the store is away. Every error is `application/problem+json` with the Problem schema and an
example per problem type; the request bodies and message types carry examples (gateway.api.examples).
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI, routing
from fastapi.openapi.utils import get_openapi

from gateway.api import examples
from gateway.api.auth import PUBLIC_PATHS
from gateway.api.problems import PROBLEM_MEDIA_TYPE, example, problem_types
from gateway.api.schemas import MAX_INT64, Problem

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
# Which credential each role uses: machines sign (RFC 9421), people send a bearer token.
SCHEMES_BY_ROLE = {"system": "httpSignature", "counterpart": "httpSignature", "admin": "bearerToken",
                   "auditor": "bearerToken"}
UNAUTHENTICATED = [slug for slug, t in problem_types().items() if t.status == 401]
_KEY = r"[!#-~](?:[ !#-~]{0,253}[!#-~])?"
IDEMPOTENCY_KEY_PATTERN = rf'^(?:{_KEY}|"{_KEY}")$'

SECURITY_SCHEMES = {
    "httpSignature": {
        "type": "apiKey", "in": "header", "name": "Signature",
        "description": "RFC 9421 HTTP Message Signature: `Signature-Input` and `Signature` (label `sig1`) with an "
                       "RFC 9530 `Content-Digest` (sha-256, of the exact body bytes; of the empty body on a GET), "
                       "covering `@method`, `@target-uri`, `content-digest` and `content-type` (when the request "
                       "has one), with the parameters `created`, `expires` (at most 5 minutes later), a fresh "
                       "`nonce` and `keyid` (the key's RFC 7638 JWK thumbprint); `alg` is ed25519 or "
                       "ecdsa-p256-sha256. A nonce is accepted once; `created` at most 60 s ahead of the "
                       "gateway clock. The Probation IS (role `system`) and counterparts (role `counterpart`, "
                       "with the key pinned to their instance) sign this way; ЦОН signs its SOAP callbacks with "
                       "an XML signature in the envelope instead."},
    "bearerToken": {"type": "http", "scheme": "bearer",
                    "description": "administrators (role `admin`) and auditors (role `auditor`): a token made "
                                   "once by `gateway clients add NAME --role admin|auditor`"},
}

HEADERS = {
    "Location": {"description": "where the resource's status is read (`status_url`)",
                 "schema": {"type": "string", "format": "uri-reference"}},
    "Retry-After": {"description": "seconds to wait before sending the request again (RFC 9110)",
                    "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT64}},
    "Idempotent-Replayed": {"description": "`true` when this is the stored answer to an earlier request with the "
                                           "same Idempotency-Key and body", "schema": {"type": "string",
                                                                                       "enum": ["true"]}},
    "Allow": {"description": "the methods this path answers (RFC 9110)", "required": True,
              "schema": {"type": "string", "pattern": r"^[A-Z]+(?:, ?[A-Z]+)*$"}},
    "WWW-Authenticate": {"description": "the schemes the gateway accepts",
                         "schema": {"type": "string"},
                         "example": 'Signature realm="probation-gateway", Bearer realm="probation-gateway"'},
    "Content-Disposition": {"description": "the export's file name", "schema": {"type": "string"}},
}

PARAMETERS = {
    "Idempotency-Key": {
        "name": "Idempotency-Key", "in": "header", "required": False,
        "description": "IETF httpapi idempotency key, per client, kept 24 h: the same key with the same path and "
                       "body gets the first answer again (`Idempotent-Replayed: true`, status and body as first "
                       "sent); with another body `422 idempotency-key-reused`; while the first request is still "
                       "being answered `409 idempotency-key-in-flight`. 1-255 printable ASCII characters without "
                       "a double quote and without a space at either end, bare or as a quoted string (RFC 8941); "
                       "one per request.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 257, "pattern": IDEMPOTENCY_KEY_PATTERN},
        "example": "c2c1f6a4-6a0e-4f0b-9a1e-5d2b7f3e8c11"},
    "Signature-Input": {
        "name": "Signature-Input", "in": "header", "required": False,
        "description": "RFC 9421 signature parameters (see the httpSignature scheme); required on a signed request",
        "schema": {"type": "string"},
        "example": 'sig1=("@method" "@target-uri" "content-digest" "content-type");created=1772425800;'
                   'expires=1772426100;nonce="b3k2Zm9vYmFyYmF6cXV4";keyid="P-ZkeGxu4ufS85AyunQJyJtZp1rJtz3Ntl9Usq5FShg"'
                   ';alg="ed25519"'},
    "Content-Digest": {
        "name": "Content-Digest", "in": "header", "required": False,
        "description": "RFC 9530 digest of the body (sha-256); required on a signed request, covered by the signature",
        "schema": {"type": "string"}, "example": "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"},
}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _roles(route: Any) -> frozenset[str]:
    found: set[str] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        roles = getattr(dependant.call, "roles", None)
        if roles:
            found |= roles
        stack.extend(dependant.dependencies)
    return frozenset(found)


def _add_problems(operation: dict[str, Any], *slugs: str) -> None:
    """Add these problem types to the operation's responses, merged with what the route declared."""
    responses = operation.setdefault("responses", {})
    for slug in slugs:
        known = problem_types()[slug]
        entry = responses.setdefault(str(known.status), {"description": ""})
        content = entry.setdefault("content", {})
        content.pop("application/json", None)  # FastAPI's default for an error; the gateway sends problem+json
        media = content.setdefault(PROBLEM_MEDIA_TYPE, {})
        media["schema"] = PROBLEM_REF
        media.setdefault("examples", {}).setdefault(slug, {"$ref": f"#/components/examples/{slug}"})
    for status, entry in responses.items():
        media = entry.get("content", {}).get(PROBLEM_MEDIA_TYPE)
        if media and status[0] in "45":
            entry["description"] = "; ".join(f"`{name}`: {problem_types()[name].title}"
                                             for name in sorted(media.get("examples", {})))


def _header(response: dict[str, Any], name: str) -> None:
    response.setdefault("headers", {})[name] = _ref("headers", name)


def _bound_integers(node: Any) -> None:
    """Every integer the API takes or gives fits in 64 bits: a larger one is a 422, never a 500."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("maximum", MAX_INT64)
            node.setdefault("minimum", -MAX_INT64 - 1)
        for value in node.values():
            _bound_integers(value)
    elif isinstance(node, list):
        for value in node:
            _bound_integers(value)


def _complete(route: Any, method: str, operation: dict[str, Any]) -> None:
    path = route.path_format
    roles = _roles(route)
    # A query parameter the route checks itself (to answer its own problem type) is still required.
    for name in operation.pop("x-required-query", ()):
        for parameter in operation.get("parameters", []):
            if parameter.get("in") == "query" and parameter["name"] == name:
                parameter["required"] = True
                parameter["schema"] = {**next((s for s in parameter["schema"].get("anyOf", [])
                                               if s.get("type") != "null"), parameter["schema"]), "minLength": 1}
    public = path in PUBLIC_PATHS
    parameters = operation.setdefault("parameters", [])
    body = operation.get("requestBody")
    json_body = getattr(route, "body_field", None) is not None  # parsed by FastAPI (inbound reads its own bytes)

    if public:
        operation["security"] = []
    else:
        schemes = sorted({SCHEMES_BY_ROLE[r] for r in roles})
        operation["security"] = [{s: []} for s in schemes]
        operation["x-roles"] = sorted(roles)
        roles_text = ", ".join(f"`{r}`" for r in sorted(roles))
        operation["description"] = (operation.get("description", "").rstrip() + f"\n\nRoles: {roles_text}.").lstrip()
        if "httpSignature" in schemes:
            parameters += [_ref("parameters", "Signature-Input"), _ref("parameters", "Content-Digest")]
        _add_problems(operation, *UNAUTHENTICATED, "forbidden", "store-unavailable")
        _header(operation["responses"]["401"], "WWW-Authenticate")
        _header(operation["responses"]["503"], "Retry-After")
    _add_problems(operation, "method-not-allowed")
    _header(operation["responses"]["405"], "Allow")

    if body is not None:
        _add_problems(operation, "payload-too-large")
    if json_body:
        _add_problems(operation, "malformed-json", "unsupported-media-type", "invalid-message")
    if any(p.get("in") in ("path", "query") for p in parameters if "in" in p):
        _add_problems(operation, "invalid-message")
    if method == "post" and not public:
        parameters.append(_ref("parameters", "Idempotency-Key"))
        _add_problems(operation, "invalid-idempotency-key", "idempotency-key-in-flight", "idempotency-key-reused")
        _header(operation["responses"]["409"], "Retry-After")
        for status, response in operation["responses"].items():
            if status[0] in "234":
                _header(response, "Idempotent-Replayed")
    if not parameters:
        operation.pop("parameters")
    # FastAPI's validation-error schemas are replaced by the Problem the gateway sends.
    for response in operation["responses"].values():
        content = response.get("content", {})
        if content.get("application/json", {}).get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
            content.pop("application/json")
    operation["responses"] = dict(sorted(operation["responses"].items()))


def _instance_schemas() -> dict[str, Any]:
    """A counterpart instance as PUT takes it (the counterparts file's schema) and as a PATCH changes it."""
    from gateway.mapping import Instance

    instance = Instance.model_json_schema(ref_template="#/components/schemas/{model}")
    found = instance.pop("$defs", {})
    instance["title"] = "CounterpartInstance"
    instance["description"] = ("A counterpart instance as in the counterparts file. With `require_signatures` (the "
                               "default) `keys` pins at least one key: a file (relative to the counterparts file, "
                               "or under $GATEWAY_HOME) or an inline PEM certificate, PEM public key or JWK.")
    patch = copy.deepcopy(instance)
    patch.pop("required", None)
    patch["title"] = "CounterpartInstancePatch"
    patch["description"] = "RFC 7396 merge patch of a CounterpartInstance: a member set to null takes its default."
    patch["properties"] = {name: {"anyOf": [prop, {"type": "null"}]} for name, prop in patch["properties"].items()}
    return {**found, "CounterpartInstance": instance, "CounterpartInstancePatch": patch}


def build(app: FastAPI) -> dict[str, Any]:
    """The whole document, as `gateway openapi` prints it and `/openapi.json` serves it."""
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    components = schema.setdefault("components", {})
    components["securitySchemes"] = SECURITY_SCHEMES
    components["headers"] = copy.deepcopy(HEADERS)
    components["parameters"] = copy.deepcopy(PARAMETERS)
    components["examples"] = {slug: example(known) for slug, known in sorted(problem_types().items())}
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(_instance_schemas())
    schema["security"] = [{"httpSignature": []}, {"bearerToken": []}]
    for route in routing.iter_route_contexts(app.routes):  # included routers flattened, with their prefixes
        if not isinstance(route.original_route, routing.APIRoute) or not route.include_in_schema:
            continue
        for method in sorted(m.lower() for m in route.methods):
            operation = schema["paths"].get(route.path_format, {}).get(method)
            if operation is not None:
                _complete(route, method, operation)
    examples.install(schema)
    _bound_integers(schema)
    return schema
