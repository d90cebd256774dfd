#!/usr/bin/env python3
"""Example downstream consumer of identify-connector's output topic.

Reads result records, validates each value against
docs/schemas/output.schema.json and prints `identifier -> person`.

Install (a venv is recommended):

    python3 -m venv .venv && . .venv/bin/activate
    pip install confluent-kafka jsonschema rfc3339-validator

Run (from the repository root or anywhere; the schema path is found relative
to this file):

    python3 examples/downstream_consumer.py \
        --brokers 127.0.0.1:9092 --topic emails.identified \
        --group identify-downstream-example --from-beginning

For a SASL_SSL cluster, pass librdkafka properties with -X, e.g.
    -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512 \
    -X sasl.username=reader -X sasl.password="$KAFKA_PASSWORD"

Stop with Ctrl-C. Offsets are stored only after a record has been handled,
and committed by the client's auto-commit, so a crash may print a record
twice (at least once, like the connector itself).
"""

import argparse
import json
import pathlib
import sys

from confluent_kafka import Consumer, KafkaError, KafkaException
from jsonschema import Draft202012Validator

SCHEMA_PATH = pathlib.Path(__file__).resolve().parent.parent / "docs" / "schemas" / "output.schema.json"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", default="127.0.0.1:9092", help="bootstrap servers")
    p.add_argument("--topic", default="emails.identified", help="the connector's kafka.output_topic")
    p.add_argument("--group", default="identify-downstream-example", help="consumer group of this example")
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest offset when the group has none")
    p.add_argument("--schema", default=str(SCHEMA_PATH), help="path of output.schema.json")
    p.add_argument("-X", dest="props", action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka property (repeatable)")
    return p.parse_args()


def describe(value):
    """`identifier -> person` for one valid output value."""
    if not value["matched"]:
        return f"{value['identifier']} -> (no match)"
    best = max(value["matches"], key=lambda m: m.get("confidence_score") or 0)
    person = best.get("person_data") or {}
    profile = person.get("basic_profile") or {}
    name = profile.get("name") or "(no name)"
    title = profile.get("current_title") or profile.get("title") or profile.get("headline")
    parts = [name]
    if title:
        parts.append(title)
    parts.append(f"crustdata_person_id={person.get('crustdata_person_id')}")
    if "confidence_score" in best:
        parts.append(f"confidence={best['confidence_score']}")
    return f"{value['identifier']} -> " + ", ".join(parts)


def main():
    args = parse_args()
    schema = json.loads(pathlib.Path(args.schema).read_text())
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    conf = {
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "enable.auto.offset.store": False,
    }
    for prop in args.props:
        key, sep, val = prop.partition("=")
        if not sep:
            sys.exit(f"-X expects KEY=VALUE, got {prop!r}")
        conf[key] = val

    consumer = Consumer(conf)
    consumer.subscribe([args.topic])
    seen = invalid = 0
    try:
        while True:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            seen += 1
            where = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
            try:
                value = json.loads(msg.value())
            except (TypeError, ValueError) as e:
                invalid += 1
                print(f"{where}: value is not JSON: {e}", file=sys.stderr)
            else:
                errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
                if errors:
                    invalid += 1
                    for e in errors:
                        path = "/".join(map(str, e.absolute_path)) or "(root)"
                        print(f"{where}: schema violation at {path}: {e.message}", file=sys.stderr)
                else:
                    headers = dict(msg.headers() or [])
                    batch = headers.get("identify.batch_id", b"").decode("utf-8", "replace")
                    print(f"{describe(value)}  [batch {batch}]")
            consumer.store_offsets(msg)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        print(f"{seen} records, {invalid} invalid", file=sys.stderr)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
