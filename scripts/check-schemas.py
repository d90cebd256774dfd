#!/usr/bin/env python3
"""Checks docs/schemas/*.schema.json.

1. Every schema is valid JSON Schema 2020-12 (metaschema check).
2. A sample output value validates against output.schema.json (result mode),
   an enriched input against enriched.schema.json (enrich mode, whose result
   object must equal result mode's without `source`), and a sample
   dead-letter record against dead-letter.schema.json.
3. Values that must be refused are refused (so the schemas are not vacuous).

Needs `jsonschema` (and `rfc3339-validator` for the date-time format). When
they are not importable, the script creates a venv at
~/.cache/identify-connector/venv-docs, installs them there from PyPI and
re-runs itself with that venv's interpreter.

Usage: python3 scripts/check-schemas.py      (exit 0: all checks passed)
"""

import json
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "docs" / "schemas"
VENV = pathlib.Path.home() / ".cache" / "identify-connector" / "venv-docs"
PACKAGES = ["jsonschema>=4.18", "rfc3339-validator"]


def ensure_deps():
    try:
        import jsonschema  # noqa: F401
        import rfc3339_validator  # noqa: F401
        return
    except ImportError:
        pass
    python = VENV / "bin" / "python"
    if os.environ.get("IDENTIFY_CHECK_SCHEMAS_IN_VENV"):
        sys.exit("check-schemas: jsonschema still missing inside " + str(VENV))
    if not python.exists():
        print(f"check-schemas: creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    env = dict(os.environ, IDENTIFY_CHECK_SCHEMAS_IN_VENV="1")
    os.execve(str(python), [str(python), str(pathlib.Path(__file__).resolve()), *sys.argv[1:]], env)


SAMPLE_OUTPUT = {
    "identifier": "jane@acme.com",
    "identifier_type": "business_email",
    "matched": True,
    "matches": [
        {
            "confidence_score": 1.0,
            "person_data": {
                "crustdata_person_id": 1,
                "basic_profile": {"name": "Jane"},
                "updated_at": "2026-01-01T00:00:00Z",
            },
        }
    ],
    "batch_id": "x",
    "resolved_at": "2026-01-01T00:00:00.000Z",
    "source": {"topic": "t", "partition": 0, "offset": 1},
}

SAMPLE_UNMATCHED = dict(SAMPLE_OUTPUT, identifier="nobody@example.com", matched=False, matches=[])

SAMPLE_DEAD_LETTER = {
    "key": "dXNlci0x",
    "value": "e25vdCBqc29u",
    "headers": {
        "identify.error.reason": "not_parseable",
        "identify.error.message": "value is not valid JSON: key must be a string at line 1 column 2",
        "identify.source.topic": "emails",
        "identify.source.partition": "0",
        "identify.source.offset": "42",
    },
}


def main():
    ensure_deps()
    import jsonschema
    from jsonschema import Draft202012Validator

    failures = []

    def check(name, ok):
        print(("ok   " if ok else "FAIL ") + name)
        if not ok:
            failures.append(name)

    validators = {}
    for name in ["output.schema.json", "enriched.schema.json", "dead-letter.schema.json"]:
        path = SCHEMAS / name
        try:
            schema = json.loads(path.read_text())
            Draft202012Validator.check_schema(schema)
            check(f"{name} is valid JSON Schema 2020-12", True)
            validators[name] = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        except (OSError, ValueError, jsonschema.exceptions.SchemaError) as e:
            print(f"     {e}")
            check(f"{name} is valid JSON Schema 2020-12", False)

    def valid(schema, instance):
        v = validators.get(schema)
        if v is None:
            return None
        errors = list(v.iter_errors(instance))
        for e in errors:
            print(f"     {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
        return not errors

    def bad(**changes):
        return dict(SAMPLE_OUTPUT, **changes)

    check("sample output value validates", valid("output.schema.json", SAMPLE_OUTPUT) is True)
    check("unmatched output value validates", valid("output.schema.json", SAMPLE_UNMATCHED) is True)
    check("sample dead-letter record validates", valid("dead-letter.schema.json", SAMPLE_DEAD_LETTER) is True)
    result = {k: v for k, v in SAMPLE_OUTPUT.items() if k != "source"}
    enriched = {"email": "Jane@Acme.com", "signup": {"plan": "pro"}, "crustdata": result}
    check("sample enriched value validates", valid("enriched.schema.json", enriched) is True)
    output = json.loads((SCHEMAS / "output.schema.json").read_text())
    same = json.loads((SCHEMAS / "enriched.schema.json").read_text())["$defs"]["result"]
    check(
        "enrich mode's result object is result mode's without source",
        same["properties"] == {k: v for k, v in output["properties"].items() if k != "source"}
        and same["required"] == [r for r in output["required"] if r != "source"],
    )
    print("     (the following must be refused)")
    refused = [
        ("output: unknown identifier_type", "output.schema.json", bad(identifier_type="email")),
        ("output: matched true with empty matches", "output.schema.json", bad(matches=[])),
        ("output: matched false with matches", "output.schema.json", bad(matched=False)),
        ("output: resolved_at not a date-time", "output.schema.json", bad(resolved_at="yesterday")),
        ("output: source without offset", "output.schema.json", bad(source={"topic": "t", "partition": 0})),
        ("enriched: no result", "enriched.schema.json", {"email": "jane@acme.com"}),
        ("enriched: result with source", "enriched.schema.json", {"crustdata": SAMPLE_OUTPUT}),
        (
            "dead letter: unknown reason",
            "dead-letter.schema.json",
            dict(SAMPLE_DEAD_LETTER, headers=dict(SAMPLE_DEAD_LETTER["headers"], **{"identify.error.reason": "boom"})),
        ),
    ]
    for name, schema, instance in refused:
        v = validators.get(schema)
        check(name + " is refused", v is not None and not v.is_valid(instance))

    if failures:
        print(f"check-schemas: {len(failures)} check(s) failed", file=sys.stderr)
        sys.exit(1)
    print("check-schemas: all checks passed")


if __name__ == "__main__":
    main()
