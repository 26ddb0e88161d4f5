"""The checked-in OpenAPI document is what the code generates: a drift test."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys

from gateway.api.app import create_app
from gateway.config import ROOT, Settings

CHECKED_IN = ROOT / "openapi" / "openapi.json"
FIX = "openapi/openapi.json is out of date with the code: run `gateway openapi --write` and commit the result"


def _diff(expected: str, actual: str) -> str:
    lines = difflib.unified_diff(expected.splitlines(), actual.splitlines(), "openapi/openapi.json (checked in)",
                                 "gateway openapi (from the code)", lineterm="", n=2)
    shown = list(lines)[:60]
    return "\n".join(shown)


def test_checked_in_document_matches_the_app() -> None:
    generated = create_app(Settings()).openapi()
    checked_in = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    if generated != checked_in:
        raise AssertionError(
            f"{FIX}\n"
            + _diff(json.dumps(checked_in, indent=2, ensure_ascii=False), json.dumps(generated, indent=2,
                                                                                    ensure_ascii=False))
        )


def test_gateway_openapi_command_prints_the_checked_in_file_byte_for_byte() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    out = subprocess.run([sys.executable, "-m", "gateway", "openapi"], cwd=ROOT, env=env, capture_output=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    printed = out.stdout.decode("utf-8")
    expected = CHECKED_IN.read_text(encoding="utf-8")
    assert printed == expected, f"{FIX}\n{_diff(expected, printed)}"


def test_document_describes_the_problem_responses() -> None:
    doc = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
    post = doc["paths"]["/v1/messages"]["post"]
    assert {"202", "400", "413", "422"} <= set(post["responses"])
    assert "/v1/messages/{message_id}" in doc["paths"] and "/v1/inbound/{counterpart}" in doc["paths"]
    assert {"/healthz", "/readyz", "/metrics"} <= set(doc["paths"])


# ---- the document tells the truth: problems, headers, constraints, examples ---------------------------------

DOC = json.loads(CHECKED_IN.read_text(encoding="utf-8"))
OPERATIONS = [(path, method, op) for path, ops in DOC["paths"].items() for method, op in ops.items()]


def _resolve(node: dict) -> dict:
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = DOC["components"][kind][name]
    return node


def test_every_error_is_problem_json_with_the_problem_schema_and_an_example() -> None:
    from gateway.api.problems import problem_types

    for path, method, op in OPERATIONS:
        for status, response in op["responses"].items():
            if status[0] not in "45" or (path, status) == ("/readyz", "503"):
                continue
            content = response["content"]
            assert "application/json" not in content, (path, method, status)
            media = content["application/problem+json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, (path, method, status)
            for slug, ref in media["examples"].items():
                value = _resolve(ref)["value"]
                known = problem_types()[slug]
                assert value["status"] == int(status) == known.status, (path, method, slug)
                assert value["type"] == known.type and value["title"] == known.title
    # every problem type the gateway has is documented somewhere, with its example
    used = {slug for _, _, op in OPERATIONS for r in op["responses"].values()
            for slug in r.get("content", {}).get("application/problem+json", {}).get("examples", {})}
    assert used == set(problem_types()) - {"internal-error"}, set(problem_types()) ^ used
    assert set(DOC["components"]["examples"]) == set(problem_types())


def test_every_operation_lists_the_statuses_the_middleware_answers() -> None:
    for path, method, op in OPERATIONS:
        responses = op["responses"]
        assert "405" in responses and "Allow" in responses["405"]["headers"], (path, method)
        assert _resolve(responses["405"]["headers"]["Allow"])["required"] is True
        if op["security"]:
            assert {"401", "403", "503"} <= set(responses), (path, method)
            assert "Retry-After" in responses["503"]["headers"] and "WWW-Authenticate" in responses["401"]["headers"]
            assert op["x-roles"], (path, method)
        if "requestBody" in op:
            assert "413" in responses, (path, method)
            if path != "/v1/inbound/{counterpart}":  # the adapters read their own bytes
                assert {"400", "415", "422"} <= set(responses), (path, method)
        if method == "post" and op["security"]:
            names = [_resolve(p)["name"] for p in op.get("parameters", [])]
            assert "Idempotency-Key" in names, path
            assert "Retry-After" in responses["409"]["headers"]
            assert all("Idempotent-Replayed" in r.get("headers", {}) for s, r in responses.items() if s[0] in "24")
        if any(s.get("httpSignature") is not None for s in op["security"]):
            names = {_resolve(p)["name"] for p in op.get("parameters", [])}
            assert {"Signature-Input", "Content-Digest"} <= names, (path, method)
    assert DOC["paths"]["/v1/messages"]["post"]["responses"]["202"]["headers"]["Location"]
    created = DOC["paths"]["/v1/document-requests"]["post"]["responses"]
    assert {"Location"} <= set(created["200"]["headers"]) and {"Location", "Retry-After"} <= set(created["202"]["headers"])


def test_request_constraints_are_in_the_schema() -> None:
    schemas = DOC["components"]["schemas"]
    iin = schemas["Person"]["properties"]["iin"]
    assert iin["pattern"] == "^[0-9]{12}$" and iin["format"] == "kz-iin" and "check digit" in iin["description"]
    assert "iin" in schemas["DocumentRequestIn"]["required"]
    for name in ("CaseRegistered", "ReferralRequested"):
        props = schemas[name]["properties"]
        assert props["case_id"]["pattern"].startswith("^[^\\x00-\\x1F") and props["case_id"]["maxLength"] == 128
        assert props["occurred_at"]["format"] == "date-time" and "2000-01-01" in props["occurred_at"]["description"]
    detail = DOC["paths"]["/v1/audit/exchanges/{seq}"]["get"]
    reason = next(p for p in detail["parameters"] if p.get("name") == "reason")
    assert reason["required"] is True and reason["schema"]["minLength"] == 1

    def integers(node: object) -> list[dict]:
        if isinstance(node, dict):
            own = [node] if node.get("type") == "integer" else []
            return own + [i for v in node.values() for i in integers(v)]
        return [i for v in node for i in integers(v)] if isinstance(node, list) else []

    for schema in integers(DOC):
        assert schema["maximum"] <= 2**63 - 1 and schema["minimum"] >= -(2**63), schema
    for path, method, op in OPERATIONS:
        for parameter in op.get("parameters", []):
            schema = _resolve(parameter).get("schema", {})
            for branch in schema.get("anyOf", [schema]):
                if branch.get("format") == "date-time":
                    assert branch["type"] == "string" and "a number is not a date" in _resolve(parameter).get(
                        "description", "") + branch.get("description", ""), (path, parameter)


def test_every_example_is_valid_and_realistic() -> None:
    import jsonschema_rs  # comes with schemathesis (test extra)
    import yaml

    from gateway.api.examples import MESSAGES, REQUEST_EXAMPLES, SCHEMA_EXAMPLES
    from gateway.api.schemas import DocumentRequestIn
    from gateway.canonical.iin import is_valid_iin
    from gateway.canonical.messages import parse_message
    from gateway.mapping import Instance

    def validator(schema: dict) -> object:  # refs resolve in the document's components
        return jsonschema_rs.validator_for({**schema, "components": DOC["components"]})

    regions = set(yaml.safe_load((ROOT / "gateway" / "mappings" / "codes" / "common.yaml").read_text(
        encoding="utf-8"))["tables"]["regions"]["codes"])
    message_types = {m.split(" ")[0] for m in MESSAGES}
    submittable = set(DOC["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                      ["discriminator"]["mapping"])
    assert message_types == submittable, "an example for every message type"
    for name, (_, message) in MESSAGES.items():
        parsed = parse_message(message)
        if parsed.type == "case.registered":
            assert is_valid_iin(parsed.body.person.iin) and parsed.body.region in regions, name
            assert any("\u0400" <= ch <= "\u04ff" for ch in parsed.body.person.surname), name
    for (path, method), by_media in REQUEST_EXAMPLES.items():
        content = DOC["paths"][path][method]["requestBody"]["content"]
        for media_type, named in by_media.items():
            assert content[media_type]["examples"] == named
            schema = content[media_type].get("schema")
            for example_name, example in named.items():
                if schema and media_type.endswith("json"):
                    v = validator(schema)
                    assert v.is_valid(example["value"]), (path, method, example_name)
    DocumentRequestIn.model_validate(SCHEMA_EXAMPLES["DocumentRequestIn"])
    Instance.model_validate(REQUEST_EXAMPLES[("/v1/admin/counterparts/{name}", "put")]["application/json"]
                            ["new-region"]["value"])
    for name, schema in DOC["components"]["schemas"].items():
        for example in schema.get("examples", []):
            assert validator(schema).is_valid(example), name
