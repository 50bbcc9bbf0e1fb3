"""The crontab's alert, ping and metrics keys: value checks, cross-checks and conversion.

``loader.py`` owns the file models and the places of errors; this module holds what is
particular to ``notifiers:``, ``settings.smtp``, ``settings.pings``, ``settings.metrics``
and the jobs' ``on_*``, ``alert_if_no_success_for`` and ``ping_url`` keys, on plain values:

- value checks raise ``ValueError`` with the message ``loader.py`` places;
- ``cross_check`` finds what no single value shows (a notifier name nobody defined, an
  ``email`` notifier without ``settings.smtp``, a dead-man alert with nowhere to go);
- the converters build the ``model.py`` values.

URLs may hold secrets (a healthchecks UUID, a chat token), so no message repeats one.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from cronplus.core.model import (
    Delivery,
    ListenAddress,
    NotifierConfig,
    NotifierKind,
    SmtpSecurity,
    SmtpSettings,
)

ALERT_KEYS = ("on_failure", "on_retry", "on_missed", "on_recovery")
KINDS = tuple(kind.value for kind in NotifierKind)
PING_DELIVERY = Delivery(retry_delay=timedelta(seconds=1))
"""Pings retry sooner than alerts: a late start ping skews the measured run time."""
_ADDRESS = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+$")


def url(value: object) -> str:
    """An ``http://`` or ``https://`` URL with a host; the message never repeats it."""
    if isinstance(value, str):
        try:
            parts = urlsplit(value.strip())
            good = parts.scheme in ("http", "https") and bool(parts.hostname)
            good = good and (parts.port is None or parts.port > 0)
        except ValueError:  # a port that is not a number
            good = False
        if good:
            return value.strip()
    got = "" if isinstance(value, str) else f", got {type(value).__name__}"
    # The value is not echoed: a ping or webhook URL may hold a secret.
    raise ValueError(f"expected an http:// or https:// URL with a host{got}")


def mail_address(value: object) -> str:
    """``name@host``: one address, no display name, nothing that could start a new header."""
    if isinstance(value, str) and _ADDRESS.fullmatch(value.strip()):
        return value.strip()
    raise ValueError(f"expected an e-mail address such as ops@example.com, got {value!r}")


def listen_address(value: object) -> ListenAddress:
    """``HOST:PORT``, ``[IPv6]:PORT``, or a bare port (on 127.0.0.1); port 0 lets the
    system choose."""
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    host, _, port = text.rpartition(":") if ":" in text else ("127.0.0.1", "", text)
    host = host.removeprefix("[").removesuffix("]") if host.startswith("[") else host
    if port.isdigit() and int(port) <= 65535 and host and _is_host(host):
        return ListenAddress(host=host, port=int(port))
    raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9746 (or a port alone), got {value!r}")


def _is_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOST.fullmatch(host))
    return True


# --- cross-checks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A problem at ``loc``: at the key itself (``at_key``) or at its value."""

    loc: tuple[Any, ...]
    message: str
    at_key: bool = False


def cross_check(root: Mapping[str, Any]) -> list[Finding]:
    """What the file models cannot see alone; ``root`` is the raw file, maybe malformed."""
    settings = _mapping(root.get("settings"))
    notifiers = _mapping(root.get("notifiers"))
    findings = _check_notifiers(notifiers, has_smtp="smtp" in settings)
    findings += _check_smtp(_mapping(settings.get("smtp")))
    defaults = _mapping(root.get("defaults"))
    places: list[tuple[tuple[str, ...], Mapping[str, Any]]] = [(("defaults",), defaults)]
    places += [(("jobs", name), _mapping(job)) for name, job in _mapping(root.get("jobs")).items()]
    for loc, fields in places:
        findings += _check_routes(loc, fields, set(notifiers))
    for name, job in _mapping(root.get("jobs")).items():
        findings += _check_dead_man(("jobs", name), _mapping(job), defaults)
    return findings


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_notifiers(notifiers: Mapping[str, Any], *, has_smtp: bool) -> list[Finding]:
    findings = []
    for name, raw in notifiers.items():
        given = [kind for kind in KINDS if kind in _mapping(raw)]
        if len(given) != 1:
            got = f"got {' and '.join(given)}" if given else "got none"
            message = f"expected exactly one of command, webhook or email, {got}"
            findings.append(Finding(("notifiers", name), message, at_key=True))
        if "email" in given and not has_smtp:
            message = "an email notifier needs settings.smtp (the server to send through)"
            findings.append(Finding(("notifiers", name, "email"), message, at_key=True))
    return findings


def _check_smtp(smtp: Mapping[str, Any]) -> list[Finding]:
    if not smtp:
        return []
    sources = [key for key in ("password_env", "password_file") if key in smtp]
    loc = ("settings", "smtp")
    if len(sources) > 1:
        return [Finding((*loc, sources[1]), "give password_env or password_file, not both", True)]
    if sources and "username" not in smtp:
        return [Finding((*loc, sources[0]), "a password needs a username to log in with", True)]
    if "username" in smtp and not sources:
        why = "a username needs password_env or password_file (never the password itself)"
        return [Finding((*loc, "username"), why, True)]
    host = smtp.get("host")
    if "username" in smtp and smtp.get("security") == "none" and not _loopback(host):
        why = (
            f"security: none would send the password to {host} in clear text; use starttls"
            " or tls (security: none with a login is only for a relay on this host)"
        )
        return [Finding((*loc, "security"), why, True)]
    return []


def _loopback(host: object) -> bool:
    """Whether ``host`` names this machine (``localhost``, 127.0.0.0/8, ::1): no wire."""
    if not isinstance(host, str):
        return True  # a missing or wrong host is reported on its own
    name = host.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check_routes(
    loc: tuple[str, ...], fields: Mapping[str, Any], known: set[str]
) -> list[Finding]:
    findings = []
    for key in ALERT_KEYS:
        names = fields.get(key)
        for index, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in known:
                have = f"expected one of {', '.join(sorted(known))}" if known else "none is defined"
                message = f"no notifier named {name!r} under notifiers:; {have}"
                findings.append(Finding((*loc, key, index), message))
    return findings


def _check_dead_man(
    loc: tuple[str, ...], job: Mapping[str, Any], defaults: Mapping[str, Any]
) -> list[Finding]:
    period = job.get("alert_if_no_success_for", defaults.get("alert_if_no_success_for"))
    routes = job.get("on_failure", defaults.get("on_failure"))
    if period in (None, "none") or routes:
        return []
    where = loc if "alert_if_no_success_for" in job else ("defaults",)
    message = "the dead-man alert goes to the on_failure notifiers, and this job has none"
    return [Finding((*where, "alert_if_no_success_for"), message, at_key=True)]


# --- conversion ---------------------------------------------------------------------------


NOTIFIER_DELIVERY = Delivery()


def delivery(raw: Mapping[str, Any], base: Delivery = NOTIFIER_DELIVERY) -> Delivery:
    """``timeout``, ``retries`` and ``retry_delay`` over ``base``."""
    keys = ("timeout", "retries", "retry_delay")
    return Delivery(**{key: raw.get(key, getattr(base, key)) for key in keys})


def notifiers(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, NotifierConfig]:
    """``notifiers:`` as ``NotifierConfig`` values (``cross_check`` found exactly one kind)."""
    built = {}
    for name, fields in raw.items():
        kind = NotifierKind(next(k for k in KINDS if k in fields))
        built[name] = NotifierConfig(
            name=name,
            kind=kind,
            argv=tuple(fields.get("command", ())),
            url=fields.get("webhook", ""),
            to=tuple(fields.get("email", ())),
            delivery=delivery(fields),
        )
    return built


def smtp(raw: Mapping[str, Any]) -> SmtpSettings:
    fields = dict(raw)
    fields.setdefault("port", 465 if fields.get("security") is SmtpSecurity.TLS else 587)
    return SmtpSettings(**fields)


def job_fields(fields: dict[str, Any]) -> None:
    """Lists become tuples; ``alert_if_no_success_for: none`` is already None."""
    for key in ALERT_KEYS:
        if key in fields:
            fields[key] = tuple(fields[key])
