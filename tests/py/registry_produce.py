#!/usr/bin/env python3
"""Produces the registry-format test inputs with Confluent's own Python
serializers (AvroSerializer, JSONSerializer, ProtobufSerializer), against a
real Schema Registry: an independent encoder, not the connector's.

  registry_produce.py --registry URL --format avro|json|protobuf
      --prefix P --count N [--closed] [--brokers B --topic T | --raw]

Each record carries {"email": "<P><i>@example<i%13>.com", "user": i} and
the key "user-<i % 50>". With --raw nothing is produced: the serialized
values are printed as base64 lines (for a test that produces them while the
registry is paused). The schema id used is printed on stderr.
"""
import argparse
import base64
import sys

from confluent_kafka import Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def avro_schema(name):
    return (
        '{"type":"record","name":"%s","namespace":"identify.test","fields":['
        '{"name":"email","type":"string"},{"name":"user","type":"long"},'
        '{"name":"note","type":["null","string"],"default":null}]}' % name
    )


def json_schema(name, closed):
    return (
        '{"$schema":"http://json-schema.org/draft-07/schema#","title":"%s","type":"object",%s'
        '"properties":{"email":{"type":"string"},"user":{"type":"integer"}},'
        '"required":["email","user"]}' % (name, '"additionalProperties":false,' if closed else "")
    )


def proto_text(name):
    return (
        'syntax = "proto3";\npackage identify.test;\n'
        "message Other { string x = 1; }\n"
        "message %s { string email = 1; int64 user = 2; }\n" % name
    )


def protobuf_class(name):
    f = descriptor_pb2.FileDescriptorProto(name=name.lower() + ".proto", package="identify.test", syntax="proto3")
    # A first message, so that the record's message index is not the default 0.
    f.message_type.add(name="Other").field.add(
        name="x", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    m = f.message_type.add(name=name)
    m.field.add(name="email", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    m.field.add(name="user", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
                label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("identify.test." + name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", required=True)
    ap.add_argument("--format", required=True, choices=["avro", "json", "protobuf"])
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--name", default="Event", help="record / message name (a new name: a new schema)")
    ap.add_argument("--brokers")
    ap.add_argument("--topic")
    ap.add_argument("--raw", action="store_true")
    ap.add_argument("--closed", action="store_true", help="JSON Schema: additionalProperties false")
    a = ap.parse_args()
    sr = SchemaRegistryClient({"url": a.registry})
    topic = a.topic or "registry-raw"
    subject = topic + "-value"
    conf = {"auto.register.schemas": True}
    if a.format == "avro":
        ser = AvroSerializer(sr, avro_schema(a.name), conf=conf)
        make = lambda i: {"email": email(a.prefix, i), "user": i, "note": None}
    elif a.format == "json":
        ser = JSONSerializer(json_schema(a.name, a.closed), sr, conf=conf)
        make = lambda i: {"email": email(a.prefix, i), "user": i}
    else:
        # The serializer would register a base64 FileDescriptorProto, which
        # not every registry parses; the .proto text is registered instead
        # and the serializer uses it as the subject's latest version.
        sr.register_schema(subject, Schema(proto_text(a.name), "PROTOBUF"))
        cls = protobuf_class(a.name)
        ser = ProtobufSerializer(
            cls, sr, conf={"auto.register.schemas": False, "use.latest.version": True, "use.deprecated.format": False}
        )
        make = lambda i: cls(email=email(a.prefix, i), user=i)
    ctx = SerializationContext(topic, MessageField.VALUE)
    producer = None if a.raw else Producer({"bootstrap.servers": a.brokers, "linger.ms": 5})
    schema_id = None
    for i in range(a.count):
        value = ser(make(i), ctx)
        schema_id = int.from_bytes(value[1:5], "big")
        if a.raw:
            print(base64.b64encode(value).decode())
        else:
            producer.produce(topic, key=("user-%d" % (i % 50)).encode(), value=value)
            producer.poll(0)
    if producer is not None:
        left = producer.flush(30)
        if left:
            sys.exit("%d records not delivered" % left)
    print("schema_id=%s format=%s count=%d" % (schema_id, a.format, a.count), file=sys.stderr)


def email(prefix, i):
    return "%s%d@example%d.com" % (prefix, i, i % 13)


if __name__ == "__main__":
    main()
