#!/usr/bin/env python3
"""Checks the chart's config schema and defaults against the connector.

Used by scripts/helm-check.sh (run it with the kubernetes-validate venv's
python, which has jsonschema and PyYAML). config/example.toml lists every key
the connector accepts with its built-in default (src/config/mod.rs); keys it
only mentions in comments (`# key = ...`) are the secrets, which the chart
passes through the environment from Secrets instead of the ConfigMap.

1. example.toml, as `config`, is accepted by values.schema.json (every key,
   type and default the connector accepts is accepted by the chart);
2. the schema's sections and keys are exactly example.toml's (set and
   commented), so a key added to the connector fails here until the schema
   knows it;
3. every key the chart sets in values.yaml `config` has the connector's
   default, except the deliberate deployment choices in DEPLOYMENT_CHOICES;
4. the secret keys are refused in `config` (it becomes a ConfigMap).

Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import json
import os
import re
import sys
import tomllib

import jsonschema
import yaml

# Chart defaults that deliberately differ from the connector's built-in ones.
DEPLOYMENT_CHOICES = {
    "kafka.brokers": "a Service name; the built-in 127.0.0.1:9092 is useless in a pod",
    "log.format": "json lines for log collectors",
    "cache.dir": "the chart's store volume",
}
# librdkafka pass-through maps: free-form, not part of the key comparison.
FREE_MAPS = {"kafka.consumer", "kafka.producer"}


def flatten(table, prefix=""):
    out = {}
    for key, value in table.items():
        path = prefix + key
        if isinstance(value, dict) and path not in FREE_MAPS:
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def commented_keys(text):
    """Bare keys example.toml only mentions in comments, as section.key."""
    section, found = "", set()
    for line in text.splitlines():
        m = re.match(r"^\[([a-z_.]+)\]", line)
        if m:
            section = m.group(1)
            continue
        m = re.match(r"^#\s*([a-z_]+)\s*=", line)
        if m and section:
            found.add("%s.%s" % (section, m.group(1)))
    return found


def schema_keys(node, defs, prefix=""):
    out = set()
    for key, sub in (node.get("properties") or {}).items():
        path = prefix + key
        if "$ref" in sub:
            sub = defs[sub["$ref"].rsplit("/", 1)[1]]
        if sub.get("type") == "object" and "properties" in sub and path not in FREE_MAPS:
            out |= schema_keys(sub, defs, path + ".")
        else:
            out.add(path)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chart", required=True)
    ap.add_argument("--example", required=True)
    args = ap.parse_args()
    failures = []

    with open(os.path.join(args.chart, "values.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(args.chart, "values.yaml")) as f:
        chart_config = yaml.safe_load(f)["config"]
    with open(args.example, "rb") as f:
        raw = f.read()
    example = tomllib.loads(raw.decode())
    secrets = commented_keys(raw.decode())

    validator = jsonschema.Draft7Validator(schema)
    for err in validator.iter_errors({"config": example}):
        failures.append("values.schema.json refuses %s at %s: %s"
                        % (os.path.basename(args.example), "/".join(map(str, err.path)), err.message))

    want = set(flatten(example)) | secrets
    have = schema_keys(schema["properties"]["config"], schema.get("definitions", {}))
    for key in sorted(want - have):
        failures.append("the connector accepts %s but values.schema.json does not know it" % key)
    for key in sorted(have - want):
        failures.append("values.schema.json accepts %s, which the connector does not know" % key)

    for key in sorted(secrets):
        section, name = key.rsplit(".", 1)
        probe = {name: "not-a-real-secret"}
        for part in reversed(section.split(".")):
            probe = {part: probe}
        if validator.is_valid({"config": probe}):
            failures.append("values.schema.json accepts the secret config.%s (it would land in the ConfigMap)" % key)

    defaults = flatten(example)
    for key, value in sorted(flatten(chart_config).items()):
        if value is None or key in DEPLOYMENT_CHOICES:
            continue
        if key not in defaults:
            failures.append("values.yaml sets config.%s, which example.toml does not list" % key)
        elif value != defaults[key]:
            failures.append("values.yaml config.%s = %r, but the connector's default is %r"
                            % (key, value, defaults[key]))

    for failure in failures:
        print("  FAIL [schema] %s" % failure)
    if not failures:
        print("  ok   [schema] %d keys (%d secrets) match %s; chart defaults match"
              % (len(want), len(secrets), os.path.basename(args.example)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
