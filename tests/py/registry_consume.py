#!/usr/bin/env python3
"""Reads the connector's registry-format output with Confluent's own Python
deserializers (AvroDeserializer, or JSONDeserializer, which validates each
value against its writer schema), against a real Schema Registry: an
independent decoder, not the connector's.

  registry_consume.py --registry URL --brokers B --topic T
      --format avro|json --count N [--timeout S]

Prints one JSON line per record: {"schema_id", "value", "headers"}. Exits
non-zero when fewer than N records arrive within the timeout (default 60 s)
or a value does not deserialize.
"""
import argparse
import json
import sys
import time
import uuid

from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--format", required=True, choices=["avro", "json"])
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    sr = SchemaRegistryClient({"url": a.registry})
    if a.format == "avro":
        de = AvroDeserializer(sr)
    else:
        de = JSONDeserializer(None, schema_registry_client=sr)
    c = Consumer({
        "bootstrap.servers": a.brokers,
        "group.id": "registry-consume-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    c.subscribe([a.topic])
    ctx = SerializationContext(a.topic, MessageField.VALUE)
    seen = 0
    deadline = time.time() + a.timeout
    while seen < a.count and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            sys.exit("consume: %s" % msg.error())
        value = de(msg.value(), ctx)
        headers = {k: (v.decode() if v is not None else None) for k, v in (msg.headers() or [])}
        print(json.dumps({
            "schema_id": int.from_bytes(msg.value()[1:5], "big"),
            "value": value,
            "headers": headers,
        }, default=str))
        seen += 1
    c.close()
    if seen < a.count:
        sys.exit("%d of %d records within %.0f s" % (seen, a.count, a.timeout))


if __name__ == "__main__":
    main()
