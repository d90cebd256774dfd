#!/usr/bin/env python3
"""Example downstream consumer of identify-connector's output topic.

Reads the connector's output records in either mode, validates each value
against its schema in docs/schemas and prints `identifier -> person`:

- `--mode result` (output.mode = "result", the default): the value is a
  result record (output.schema.json);
- `--mode enrich` (output.mode = "enrich"): the value is the input event
  with the result at `--enrich-field` (output.enrich_field, default
  /crustdata); the result there is validated against
  enriched.schema.json#/$defs/result, and the event's other members are
  printed next to it.

Install (a venv is recommended):

    python3 -m venv .venv && . .venv/bin/activate
    pip install confluent-kafka jsonschema rfc3339-validator

(scripts/py-venv.sh makes such a venv and prints its python.)

Run (from the repository root or anywhere; the schema path is found relative
to this file):

    python3 examples/downstream_consumer.py \
        --brokers 127.0.0.1:9092 --topic emails.identified \
        --group identify-downstream-example --from-beginning

    python3 examples/downstream_consumer.py --mode enrich \
        --brokers 127.0.0.1:9092 --topic signups.enriched --from-beginning

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
import time

from confluent_kafka import Consumer, KafkaError, KafkaException
from jsonschema import Draft202012Validator

SCHEMAS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "schemas"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--brokers", default="127.0.0.1:9092", help="bootstrap servers")
    p.add_argument("--topic", default="emails.identified", help="the connector's kafka.output_topic")
    p.add_argument("--group", default="identify-downstream-example", help="consumer group of this example")
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest offset when the group has none")
    p.add_argument("--mode", choices=["result", "enrich"], default="result", help="the connector's output.mode")
    p.add_argument("--enrich-field", default="/crustdata", help="the connector's output.enrich_field (enrich mode)")
    p.add_argument("--schemas", default=str(SCHEMAS), help="directory of the connector's JSON Schemas")
    p.add_argument("--read-committed", action="store_true", help="isolation.level=read_committed")
    p.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="exit when no record arrived for this long (default: run until Ctrl-C)")
    p.add_argument("-X", dest="props", action="append", default=[], metavar="KEY=VALUE",
                   help="extra librdkafka property (repeatable)")
    return p.parse_args()


def at_pointer(doc, pointer):
    """The value at RFC 6901 `pointer` in `doc`, or None."""
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(doc, dict) or token not in doc:
            return None
        doc = doc[token]
    return doc


def without_pointer(doc, pointer):
    """A copy of `doc` without the member at `pointer` (the input event)."""
    doc = json.loads(json.dumps(doc))
    *parents, last = [t.replace("~1", "/").replace("~0", "~") for t in pointer.split("/")[1:]]
    node = doc
    for t in parents:
        node = node[t]
    del node[last]
    return doc


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
    schemas = pathlib.Path(args.schemas)
    if args.mode == "result":
        schema = json.loads((schemas / "output.schema.json").read_text())
    else:
        schema = json.loads((schemas / "enriched.schema.json").read_text())["$defs"]["result"]
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

    conf = {
        "bootstrap.servers": args.brokers,
        "group.id": args.group,
        "auto.offset.reset": "earliest" if args.from_beginning else "latest",
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed" if args.read_committed else "read_uncommitted",
    }
    for prop in args.props:
        key, sep, val = prop.partition("=")
        if not sep:
            sys.exit(f"-X expects KEY=VALUE, got {prop!r}")
        conf[key] = val

    consumer = Consumer(conf)
    consumer.subscribe([args.topic])
    seen = invalid = 0
    idle_since = time.monotonic()
    try:
        while True:
            msg = consumer.poll(0.5)
            if msg is None:
                if args.idle_exit is not None and time.monotonic() - idle_since > args.idle_exit:
                    break
                continue
            idle_since = time.monotonic()
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
                consumer.store_offsets(msg)
                continue
            event = None
            if args.mode == "enrich":
                event, value = value, at_pointer(value, args.enrich_field)
                if value is None:
                    invalid += 1
                    print(f"{where}: nothing at {args.enrich_field}", file=sys.stderr)
                    consumer.store_offsets(msg)
                    continue
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
            if errors:
                invalid += 1
                for e in errors:
                    path = "/".join(map(str, e.absolute_path)) or "(root)"
                    print(f"{where}: schema violation at {path}: {e.message}", file=sys.stderr)
            else:
                headers = dict(msg.headers() or [])
                batch = headers.get("identify.batch_id", b"").decode("utf-8", "replace")
                line = f"{describe(value)}  [batch {batch}]"
                if event is not None:
                    line += "  event=" + json.dumps(without_pointer(event, args.enrich_field), ensure_ascii=False)
                print(line)
            consumer.store_offsets(msg)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        print(f"{seen} records, {invalid} invalid", file=sys.stderr)
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main())
