"""``amqp:`` targets: one persistent message, with publisher confirms (the ``amqp``
extra: pika).

The message's ``message_id`` is the slot's run id, its headers carry ``cronplus_run_id``,
``cronplus_job`` and ``cronplus_attempt``; ``delivery_mode`` 2 (persistent) and
``mandatory``: a message no queue takes comes back and fails the attempt, as does a nack.
No expiration is set: a message waits for its consumer as long as the queue keeps it (a
queue's own ``x-message-ttl`` or policy decides, as RabbitMQ users expect). pika's
connections are not thread-safe, so one thread of the sender's own publishes them all,
on one connection and confirming channel per URL, opened again after a failure. The URL
follows the RabbitMQ URI spec (``/%2F`` is the vhost ``/``); Celery's ``//`` means ``/`` too.
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, NackError, UnroutableError

from cronplus.core.targets import AmqpTarget, Target
from cronplus.targets.call import Call, Delivery, TargetFailed, Threads


class AmqpSender:
    def __init__(self) -> None:
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="cronplus-amqp")
        self._channels: dict[str, tuple[pika.BlockingConnection, BlockingChannel]] = {}

    async def send(self, target: Target, call: Call, threads: Threads) -> Delivery:
        assert isinstance(target, AmqpTarget)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._publish, target, call)

    def _channel(self, url: str) -> BlockingChannel:
        found = self._channels.get(url)
        if found is not None and found[0].is_open and found[1].is_open:
            return found[1]
        self._drop(url)
        parameters = pika.URLParameters(vhost_url(url))
        parameters.socket_timeout = 10
        parameters.blocked_connection_timeout = 30
        connection = pika.BlockingConnection(parameters)
        channel = connection.channel()
        channel.confirm_delivery()
        self._channels[url] = (connection, channel)
        return channel

    def _publish(self, target: AmqpTarget, call: Call) -> Delivery:
        headers: dict[str, Any] = {
            "cronplus_run_id": call.run_id,
            "cronplus_job": call.job,
            "cronplus_attempt": call.attempt,
            **target.headers,
        }
        properties = pika.BasicProperties(
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=call.run_id,
            content_type=target.content_type,
            headers=headers,
            timestamp=int(call.sent_at.timestamp()),
        )
        try:
            channel = self._channel(target.url)
            channel.basic_publish(
                target.exchange,
                target.routing_key,
                target.body.encode(),
                properties=properties,
                mandatory=True,
            )
        except UnroutableError:
            raise TargetFailed(
                f"no queue took the message (exchange {target.exchange!r},"
                f" routing key {target.routing_key!r})",
                response="returned",
            ) from None
        except NackError:
            raise TargetFailed("the broker refused the message (nack)", response="nack") from None
        except (AMQPError, OSError) as error:
            self._drop(target.url)
            raise TargetFailed(f"the broker failed: {type(error).__name__}: {error}") from None
        return Delivery(response=f"confirmed, message {call.run_id}")

    def _drop(self, url: str) -> None:
        found = self._channels.pop(url, None)
        if found is not None:
            with contextlib.suppress(AMQPError, OSError):
                found[0].close()

    def close(self) -> None:
        def close_all() -> None:
            for url in list(self._channels):
                self._drop(url)

        self._thread.submit(close_all)
        self._thread.shutdown(wait=False)


def vhost_url(url: str) -> str:
    """``url`` as pika reads it: Celery's and kombu's ``//`` (the ``/`` vhost) is
    ``/%2F`` in the RabbitMQ URI spec, which pika follows (there ``/`` names vhost "")."""
    head, slashes, rest = url.partition("//")
    if not slashes:
        return url
    authority, _, path = rest.partition("/")
    if path == "/" or path.startswith("/?"):
        return f"{head}//{authority}/%2F{path[1:]}"
    return url
