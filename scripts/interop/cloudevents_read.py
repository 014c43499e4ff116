"""Reads docstore's topics with the CloudEvents Python SDK, as an independent consumer would.

Usage: cloudevents_read.py BOOTSTRAP TOPIC EXPECTED [TOPIC EXPECTED ...]

Each message is parsed with automatic content-mode detection (`from_kafka_event`); prints one
JSON line per event (topic, type, id, source, subject) and exits non-zero if any message fails
to parse or a topic yields fewer events than expected within 60 s.
"""

import json
import sys
import time
import uuid

from cloudevents.core.bindings import kafka as ce_kafka
from confluent_kafka import Consumer


def main() -> int:
    bootstrap, rest = sys.argv[1], sys.argv[2:]
    expected = {rest[i]: int(rest[i + 1]) for i in range(0, len(rest), 2)}
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"cloudevents-sdk-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe(list(expected))
    seen = {t: 0 for t in expected}
    deadline = time.monotonic() + 60
    try:
        while any(seen[t] < n for t, n in expected.items()):
            if time.monotonic() > deadline:
                print(f"timed out: {seen} of {expected}", file=sys.stderr)
                return 1
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                print(f"kafka error: {msg.error()}", file=sys.stderr)
                return 1
            headers = {k: v for k, v in (msg.headers() or [])}
            event = ce_kafka.from_kafka_event(
                ce_kafka.KafkaMessage(headers=headers, key=msg.key(), value=msg.value())
            )
            attrs = event.get_attributes()
            seen[msg.topic()] += 1
            print(
                json.dumps(
                    {
                        "topic": msg.topic(),
                        "type": attrs["type"],
                        "id": attrs["id"],
                        "source": attrs["source"],
                        "subject": attrs.get("subject"),
                        "content_type": headers.get("content-type", b"").decode(),
                    }
                ),
                flush=True,
            )
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
