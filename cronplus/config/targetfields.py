"""The crontab's target blocks (``http:``, ``celery:``, ``rq:``, ``amqp:``) and the
``core.targets`` values built from them (docs/targets.md).

A job has ``command`` or exactly one of these; ``loader.py`` says so, naming the job's
line. URLs, headers, bodies and keys may be ``{from_env: NAME}`` or ``{from_file: PATH}``
secrets; a password in a URL is a secret too (masked wherever the URL would be shown).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, Literal, Required
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, PlainValidator, ValidationInfo, WithJsonSchema, with_config
from pydantic_core import PydanticCustomError
from typing_extensions import TypedDict

from cronplus.config import alerting
from cronplus.config.fields import EnvName, EnvValue, FilePath, Positive, env_text
from cronplus.core.targets import (
    AmqpTarget,
    CeleryTarget,
    HttpTarget,
    RqTarget,
    Signature,
    Target,
    Wait,
)
from cronplus.run import secrets

KINDS = ("http", "celery", "rq", "amqp")
"""The target keys of a job, beside ``command``."""
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BROKER_SCHEMES = {
    "celery": ("amqp", "amqps", "pyamqp", "redis", "rediss", "sqs", "memory"),
    "rq": ("redis", "rediss", "unix"),
    "amqp": ("amqp", "amqps"),
}
CLIENTS = {"celery": ("celery", "celery"), "rq": ("rq", "rq"), "amqp": ("pika", "amqp")}
"""Each target's client library: (the module, the cronplus extra that installs it)."""
_STRICT = ConfigDict(strict=True, extra="forbid")
_SOURCES = [
    {
        "type": "object",
        "properties": {key: {"type": "string"}},
        "required": [key],
        "additionalProperties": False,
    }
    for key in ("from_env", "from_file")
]


def _text(value: object, info: ValidationInfo) -> str:
    """``fields.env_text``, with a string as written stripped of its blanks."""
    return value.strip() if isinstance(value, str) else env_text(value, info)


def _kept(found: str, text: str) -> str:
    """``text`` as secret as ``found`` was."""
    return secrets.Secret(text) if isinstance(found, secrets.Secret) else text


def _http_url(value: object, info: ValidationInfo) -> str:
    found = _text(value, info)
    try:
        return _kept(found, alerting.url(found))
    except ValueError as error:
        raise PydanticCustomError("url", str(error)) from None


def _broker(kind: str) -> Any:
    schemes = BROKER_SCHEMES[kind]

    def validate(value: object, info: ValidationInfo) -> str:
        found = _text(value, info)
        try:
            scheme = urlsplit(found).scheme
        except ValueError:
            scheme = ""
        if scheme not in schemes:
            # The value is not echoed: it may hold a password.
            raise PydanticCustomError("url", f"expected a URL of {', '.join(schemes)}")
        if urlsplit(found).password:  # the password is masked wherever the URL shows
            return secrets.Secret(found)
        return found

    return PlainValidator(validate)


_URL_SCHEMA = WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1}, *_SOURCES]})
HttpUrl = Annotated[str, PlainValidator(_http_url), _URL_SCHEMA]
CeleryBroker = Annotated[str, _broker("celery"), _URL_SCHEMA]
RedisUrl = Annotated[str, _broker("rq"), _URL_SCHEMA]
AmqpUrl = Annotated[str, _broker("amqp"), _URL_SCHEMA]


def _header_value(value: object, info: ValidationInfo) -> str:
    """A header value: Latin-1 text on one line (a CR or LF would start a new header)."""
    found = _text(value, info)
    try:
        found.encode("latin-1")
    except UnicodeEncodeError:
        raise PydanticCustomError("header", "a header value must be Latin-1 text") from None
    if any(char in found for char in "\r\n\x00"):
        raise PydanticCustomError("header", "a header value must be one line (no CR, LF or NUL)")
    return found


HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")]
"""An HTTP token (RFC 9110): what a header's name may be."""
HeaderValue = Annotated[
    str,
    PlainValidator(_header_value),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": "^[^\r\n]*$"}, *_SOURCES]}),
]
Name = Annotated[str, Field(min_length=1, max_length=255)]
Json = Any  # args and kwargs: JSON values, as YAML gives them
StatusCode = Annotated[int, Field(ge=100, le=599)]


def _doc(text: str, default: object = None) -> Any:
    extra: Any = None if default is None else {"default": default}
    return Field(description=text, json_schema_extra=extra)


@with_config(_STRICT)
class SignFile(TypedDict, total=False):
    """An HMAC-SHA256 over ``TIMESTAMP.BODY`` in a header (docs/targets.md)."""

    key: Required[Annotated[EnvValue, _doc("The shared key; a secret (from_env, from_file)")]]
    header: Annotated[EnvName, _doc("The header's name", "X-Cronplus-Signature")]


@with_config(_STRICT)
class WaitFile(TypedDict, total=False):
    """Wait for the work's result and record its state."""

    timeout: Required[Annotated[Positive, _doc("How long to wait for the result")]]


@with_config(_STRICT)
class HttpFile(TypedDict, total=False):
    """Call an HTTP endpoint: success is a 2xx, or one of ``success_codes``."""

    url: Required[Annotated[HttpUrl, _doc("http:// or https://; may be from_env")]]
    method: Annotated[Literal["GET", "POST", "PUT", "PATCH", "DELETE"], _doc("", "POST")]
    headers: Annotated[
        dict[HeaderName, HeaderValue], _doc("Request headers; values may be secrets")
    ]
    body: Annotated[EnvValue, _doc("The request body (JSON, form, text)", "")]
    timeout: Annotated[Positive, _doc("The request's deadline; default: the job's, else 30s")]
    success_codes: Annotated[list[StatusCode], Field(min_length=1), _doc("Statuses that succeed")]
    sign: Annotated[SignFile, _doc("Sign the body with HMAC-SHA256")]
    verify_tls: Annotated[bool, _doc("Verify the server's certificate", True)]
    ca_file: Annotated[FilePath, _doc("PEM bundle to verify the server with")]


@with_config(_STRICT)
class CeleryFile(TypedDict, total=False):
    """Send a Celery task by name (``send_task``); the run id is the task id."""

    broker: Required[Annotated[CeleryBroker, _doc("Celery's broker URL (amqp://, redis://)")]]
    task: Required[Annotated[Name, _doc("The task's registered name")]]
    args: Annotated[list[Json], _doc("Positional arguments (JSON values)", [])]
    kwargs: Annotated[dict[str, Json], _doc("Keyword arguments (JSON values)", {})]
    queue: Annotated[Name, _doc("The queue; default: Celery's default queue, celery")]
    priority: Annotated[int, Field(ge=0, le=255), _doc("The message priority")]
    backend: Annotated[CeleryBroker, _doc("Result backend, for wait")]
    wait: Annotated[WaitFile, _doc("Wait for the task's result (needs backend)")]


@with_config(_STRICT)
class RqFile(TypedDict, total=False):
    """Enqueue an RQ job; the run id is the job id."""

    redis: Required[Annotated[RedisUrl, _doc("redis:// URL of RQ's Redis")]]
    func: Required[Annotated[Name, _doc("The function's dotted path, as the worker imports it")]]
    queue: Annotated[Name, _doc("The queue", "default")]
    args: Annotated[list[Json], _doc("Positional arguments", [])]
    kwargs: Annotated[dict[str, Json], _doc("Keyword arguments", {})]
    timeout: Annotated[Positive, _doc("RQ's job timeout: the worker's limit for the job")]
    wait: Annotated[WaitFile, _doc("Wait for the job to finish")]


@with_config(_STRICT)
class AmqpFile(TypedDict, total=False):
    """Publish one persistent message with publisher confirms; the run id is its id."""

    url: Required[Annotated[AmqpUrl, _doc("amqp:// URL of the broker")]]
    exchange: Annotated[str, _doc("The exchange; empty: the default exchange", "")]
    routing_key: Required[Annotated[str, _doc("The routing key (the queue, on the default)")]]
    body: Annotated[EnvValue, _doc("The message body", "")]
    headers: Annotated[dict[HeaderName, HeaderValue], _doc("Message headers")]
    content_type: Annotated[Name, _doc("The content type", "application/json")]


def celery_problem(block: object) -> str | None:
    """``wait`` reads the task's state from a result backend: it needs ``backend``."""
    if isinstance(block, dict) and "wait" in block and "backend" not in block:
        return "wait needs backend: the result backend the task's state is read from"
    return None


def client_missing(kind: str) -> str | None:
    """Why a ``kind`` target cannot be sent from here (its library is missing), or None."""
    if kind not in CLIENTS or importlib.util.find_spec(CLIENTS[kind][0]) is not None:
        return None
    module, extra = CLIENTS[kind]
    need = f"cronplus[{extra}]"
    return (
        f"a {kind} target needs the {module} package, which is not installed;"
        f" install the extra: pip install '{need}' (or pipx install '{need}')"
    )


def _wait(block: Mapping[str, Any] | None) -> Wait | None:
    return None if block is None else Wait(timeout=block["timeout"])


def build(kind: str, block: Mapping[str, Any]) -> Target:
    """The target of a job's checked ``kind:`` block."""
    if kind == "http":
        sign = block.get("sign")
        timeout: timedelta | None = block.get("timeout")
        return HttpTarget(
            url=block["url"],
            method=block.get("method", "POST"),
            headers=dict(block.get("headers") or {}),
            body=block.get("body", ""),
            timeout=timeout,
            success_codes=frozenset(block.get("success_codes", ())),
            signature=None if sign is None else Signature(**sign),
            verify_tls=block.get("verify_tls", True),
            ca_file=None if "ca_file" not in block else str(block["ca_file"]),
        )
    if kind == "celery":
        return CeleryTarget(
            broker=block["broker"],
            task=block["task"],
            args=tuple(block.get("args", ())),
            kwargs=dict(block.get("kwargs", {})),
            queue=block.get("queue"),
            priority=block.get("priority"),
            backend=block.get("backend"),
            wait=_wait(block.get("wait")),
        )
    if kind == "rq":
        return RqTarget(
            redis=block["redis"],
            func=block["func"],
            queue=block.get("queue", "default"),
            args=tuple(block.get("args", ())),
            kwargs=dict(block.get("kwargs", {})),
            job_timeout=block.get("timeout"),
            wait=_wait(block.get("wait")),
        )
    return AmqpTarget(
        url=block["url"],
        exchange=block.get("exchange", ""),
        routing_key=block["routing_key"],
        body=block.get("body", ""),
        headers=dict(block.get("headers") or {}),
        content_type=block.get("content_type", "application/json"),
    )
