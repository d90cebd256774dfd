#!/usr/bin/env bash
# Prints the python of a venv that runs examples/downstream_consumer.py
# and tests/py/registry_produce.py (confluent-kafka with its Schema
# Registry serializers, jsonschema, rfc3339-validator from PyPI), creating
# it under ~/.cache/identify-connector/ the first time. Used by the tests.
set -euo pipefail
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/identify-connector/venv-examples"
PACKAGES=("confluent-kafka[avro,json,protobuf,schemaregistry]" jsonschema rfc3339-validator)
if ! "$VENV/bin/python" -c "import confluent_kafka.schema_registry.avro, confluent_kafka.schema_registry.protobuf, confluent_kafka.schema_registry.json_schema, jsonschema, rfc3339_validator" 2>/dev/null; then
  echo "py-venv: installing ${PACKAGES[*]} into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PACKAGES[@]}" >&2
fi
echo "$VENV/bin/python"
