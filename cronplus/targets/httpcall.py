"""``http:`` targets: one request an attempt, on the daemon's own HTTP client.

The request carries the slot's identity (docs/targets.md): ``Idempotency-Key`` and
``X-Cronplus-Run-Id`` (the run id, the same on every retry of the slot), ``X-Cronplus-Job``,
``X-Cronplus-Scheduled-At`` and ``X-Cronplus-Attempt``. With ``sign:``, the header (by default
``X-Cronplus-Signature``) is ``t=UNIX_SECONDS,sha256=HEX``: the HMAC-SHA256 with the key of
``UNIX_SECONDS.`` followed by the body's bytes, so a receiver checks the body and refuses
an old replay. TLS is verified (the system's CAs, or ``ca_file``) unless ``verify_tls:
false``; proxies come from the daemon's environment (``HTTPS_PROXY``, ``NO_PROXY``).
"""

from __future__ import annotations

import hashlib
import hmac
import ssl
from functools import lru_cache

from cronplus.core.targets import HttpTarget, Target
from cronplus.observe import webclient
from cronplus.targets.call import BODY_KEPT, Call, Delivery, TargetFailed, Threads


def signature(key: str, body: bytes, *, at: int) -> str:
    """The signature header's value for ``body`` signed at ``at`` (Unix seconds)."""
    digest = hmac.new(key.encode(), str(at).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={at},sha256={digest}"


@lru_cache(maxsize=64)
def _context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def headers_for(target: HttpTarget, call: Call, body: bytes, *, now: int) -> dict[str, str]:
    headers = {
        "Idempotency-Key": call.run_id,
        "X-Cronplus-Run-Id": call.run_id,
        "X-Cronplus-Job": call.job,
        "X-Cronplus-Scheduled-At": call.scheduled,
        "X-Cronplus-Attempt": str(call.attempt),
    }
    if body and not any(name.lower() == "content-type" for name in target.headers):
        headers["Content-Type"] = "application/json"
    headers.update(target.headers)
    if target.signature is not None:
        headers[target.signature.header] = signature(target.signature.key, body, at=now)
    return headers


class HttpSender:
    async def send(self, target: Target, call: Call, threads: Threads) -> Delivery:
        assert isinstance(target, HttpTarget)
        body = target.body.encode()
        headers = headers_for(target, call, body, now=int(call.sent_at.timestamp()))
        try:
            tls = target.url[:6] == "https:"
            context = _context(target.verify_tls, target.ca_file) if tls else None
        except (OSError, ssl.SSLError) as error:
            raise TargetFailed(f"cannot read ca_file {target.ca_file}: {error}") from None
        try:
            answer = await webclient.request(
                target.method,
                target.url,
                body,
                env=call.env,
                headers=headers,
                ssl_context=context,
                body_limit=BODY_KEPT,
            )
        except webclient.HttpError as error:
            raise TargetFailed(str(error)) from None
        response = f"HTTP {answer.status}"
        good = target.success_codes or range(200, 300)
        if answer.status not in good:
            wanted = "a 2xx" if not target.success_codes else _codes(target.success_codes)
            raise TargetFailed(
                f"the server answered HTTP {answer.status}, expected {wanted}",
                response=response,
                body=answer.body,
            )
        return Delivery(response=response, body=answer.body)

    def close(self) -> None:
        _context.cache_clear()


def _codes(codes: frozenset[int]) -> str:
    return ", ".join(str(code) for code in sorted(codes))
