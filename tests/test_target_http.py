"""``http:`` targets against a real server on 127.0.0.1: a 2xx, a 5xx then a 2xx under
retries, a hang past the timeout, TLS with a test CA and with a certificate nobody vouches
for, a proxy from the environment, the signature, secrets masked, and the file's rules."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import json
import ssl
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Cronplus
from loopback import HttpRecorder, make_certificate
from targetrun import T0, run_slot, target_job

from cronplus.config import targetfields
from cronplus.config.loader import loads
from cronplus.core.model import ConfigError, Job, Outcome
from cronplus.core.targets import HttpTarget, Signature
from cronplus.run.secrets import Secret
from cronplus.state.sqlite import SqliteStore
from cronplus.targets import httpcall

RUN_ID = "hook@2026-01-01T07:00:00Z"


@pytest.fixture
def server() -> Iterator[HttpRecorder]:
    recorder = HttpRecorder()
    yield recorder
    recorder.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    opened = SqliteStore.open(tmp_path / "state.db")
    yield opened
    opened.close()


def http_job(url: str, *, retries: int = 0, timeout: float | None = None, **http: object) -> Job:
    target = HttpTarget(url=url, **http)  # type: ignore[arg-type]
    return target_job(target, retries=retries, timeout=timeout)


def test_a_2xx_succeeds_and_the_request_carries_the_slot_and_its_signature(
    tmp_path: Path, store: SqliteStore, server: HttpRecorder
) -> None:
    job = http_job(
        server.url + "/hooks/report?token=abc",
        body='{"report": "daily"}',
        headers={"X-Team": "ops"},
        signature=Signature(key="k3y-for-hmac"),
    )
    (row,) = run_slot(tmp_path, store, job)
    assert (row.outcome, row.response, row.exit_code) == (Outcome.SUCCEEDED, "HTTP 200", None)
    assert row.stdout == "OK"  # the body, kept as the attempt's output
    (request,) = server.requests
    assert (request.method, request.path) == ("POST", "/hooks/report?token=abc")
    assert request.body == b'{"report": "daily"}'
    headers = request.headers
    assert headers["idempotency-key"] == headers["x-cronplus-run-id"] == RUN_ID
    assert (headers["x-cronplus-job"], headers["x-cronplus-attempt"]) == ("hook", "1")
    assert headers["x-cronplus-scheduled-at"] == "2026-01-01T07:00:00Z"
    assert (headers["content-type"], headers["x-team"]) == ("application/json", "ops")
    # What a receiver does (docs/targets.md): recompute the HMAC over "t." + the body.
    stamp, _, digest = headers["x-cronplus-signature"].partition(",sha256=")
    assert stamp == f"t={int(T0.timestamp())}"
    signed = stamp[2:].encode() + b"." + request.body
    assert digest == hmac.new(b"k3y-for-hmac", signed, hashlib.sha256).hexdigest()


def test_a_5xx_then_a_2xx_is_one_retry_with_the_same_idempotency_key(
    tmp_path: Path, store: SqliteStore, server: HttpRecorder
) -> None:
    server.statuses = [503]
    rows = run_slot(tmp_path, store, http_job(server.url, retries=2, method="PUT"))
    assert [(r.attempt, r.outcome, r.response) for r in rows] == [
        (1, Outcome.FAILED, "HTTP 503"),
        (2, Outcome.SUCCEEDED, "HTTP 200"),
    ]
    assert rows[0].reason == "the server answered HTTP 503, expected a 2xx"
    keys = [
        (r.method, r.headers["idempotency-key"], r.headers["x-cronplus-attempt"])
        for r in server.requests
    ]
    assert keys == [("PUT", RUN_ID, "1"), ("PUT", RUN_ID, "2")]


def test_success_codes_replace_the_2xx_rule(
    tmp_path: Path, store: SqliteStore, server: HttpRecorder
) -> None:
    server.statuses = [200]
    (row,) = run_slot(tmp_path, store, http_job(server.url, success_codes=frozenset({202})))
    assert (row.outcome, row.reason) == (
        Outcome.FAILED,
        "the server answered HTTP 200, expected 202",
    )


def test_a_server_that_hangs_past_the_timeout_is_timed_out(
    tmp_path: Path, store: SqliteStore, server: HttpRecorder
) -> None:
    server.mode = "hang"
    (row,) = run_slot(tmp_path, store, http_job(server.url, timeout=0.5))
    assert (row.outcome, row.reason) == (Outcome.TIMED_OUT, "no answer within 0.5s")
    assert 0.5 <= row.duration_s < 5
    assert len(server.requests) == 1


def test_no_server_at_all_fails_with_why(tmp_path: Path, store: SqliteStore) -> None:
    from loopback import free_port

    (row,) = run_slot(tmp_path, store, http_job(f"http://127.0.0.1:{free_port()}/x"))
    assert row.outcome is Outcome.FAILED
    assert row.reason.startswith("cannot connect to 127.0.0.1:") and "refused" in row.reason


def _tls_server(tmp_path: Path) -> tuple[HttpRecorder, Path]:
    cert, key = make_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return HttpRecorder(tls=context), cert


def test_tls_is_verified_against_the_test_ca_and_refused_without_it(
    tmp_path: Path, store: SqliteStore
) -> None:
    tls, ca = _tls_server(tmp_path)
    try:
        (trusted,) = run_slot(tmp_path, store, http_job(tls.url, ca_file=str(ca)))
        assert (trusted.outcome, trusted.response) == (Outcome.SUCCEEDED, "HTTP 200")
        bad = replace(http_job(tls.url), name="unknown-ca")
        (refused,) = run_slot(tmp_path, store, bad)
        assert refused.outcome is Outcome.FAILED
        assert "TLS certificate verify failed: self-signed certificate" in refused.reason
        assert len(tls.requests) == 1  # the refused one never sent its request
    finally:
        tls.close()


def test_the_proxy_comes_from_the_daemons_environment(
    tmp_path: Path, store: SqliteStore, server: HttpRecorder
) -> None:
    job = http_job("http://hooks.example.invalid/run", method="GET")
    (row,) = run_slot(tmp_path, store, job, env={"http_proxy": server.url, "NO_PROXY": "localhost"})
    assert row.outcome is Outcome.SUCCEEDED
    (request,) = server.requests
    assert request.path == "http://hooks.example.invalid/run"  # the proxy's absolute form
    bypassed = run_slot(
        tmp_path,
        store,
        replace(job, name="direct"),
        env={"http_proxy": server.url, "no_proxy": "*"},
    )
    assert bypassed[0].outcome is Outcome.FAILED  # no proxy: the .invalid host is not found
    assert len(server.requests) == 1


def test_secret_headers_and_keys_never_reach_history(
    tmp_path: Path, store: SqliteStore, server: HttpRecorder
) -> None:
    token = Secret("tok-9f8e7d6c5b4a")  # as from_env gives it
    server.statuses = [500]
    headers = {"Authorization": "Bearer plain-text-credential", "X-Token": token}
    job = http_job(server.url, headers=headers, body=f"Bearer {token} plain-text-credential")
    (row,) = run_slot(tmp_path, store, job)
    assert server.requests[0].headers["x-token"] == token
    assert row.outcome is Outcome.FAILED
    text = json.dumps([row.reason, row.stdout, row.stderr, row.response])
    assert "tok-9f8e7d6c5b4a" not in text and "plain-text-credential" not in text


def test_the_signature_a_receiver_can_check() -> None:
    assert httpcall.signature("key", b"{}", at=1767250800) == (
        "t=1767250800,sha256=" + hmac.new(b"key", b"1767250800.{}", hashlib.sha256).hexdigest()
    )


# --- the file ---------------------------------------------------------------------------


def test_an_http_job_loads_with_its_secrets_from_the_environment(tmp_path: Path) -> None:
    text = """\
jobs:
  hook:
    schedule: "*/5 * * * *"
    timeout: 20s
    retries: 3
    http:
      url: {from_env: HOOK_URL}
      method: PATCH
      headers: {Authorization: {from_env: HOOK_AUTH}}
      body: '{"a": 1}'
      success_codes: [200, 204]
      sign: {key: {from_env: HOOK_KEY}, header: X-Signature}
"""
    env = {"HOME": str(tmp_path), "HOOK_URL": "https://h.example/x", "HOOK_AUTH": "Bearer zz"}
    env["HOOK_KEY"] = "signing-key-1"
    (job,) = loads(text, path=tmp_path / "c.yaml", env=env).jobs
    target = job.target
    assert isinstance(target, HttpTarget)
    assert (target.url, target.method, target.body) == ("https://h.example/x", "PATCH", '{"a": 1}')
    assert target.success_codes == frozenset({200, 204})
    assert target.signature == Signature(key="signing-key-1", header="X-Signature")
    assert isinstance(target.url, Secret) and isinstance(target.headers["Authorization"], Secret)
    assert "zz" not in repr(job) and "signing-key-1" not in repr(job)


@pytest.mark.parametrize(
    ("job", "message"),
    [
        (
            '    command: "true"\n    http: {url: "https://h.example/"}\n',
            "c.yaml:5:5: jobs.j.http: a job has one target: command and http are given; keep one",
        ),
        ("    timeout: 5s\n", "c.yaml:2:3: jobs.j: missing key 'command': expected a list"),
        (
            '    http: {url: "ftp://h.example/"}\n',
            "c.yaml:4:17: jobs.j.http.url: expected an http://",
        ),
        (
            '    http: {url: "https://h.example/", method: BREW}\n',
            "c.yaml:4:47: jobs.j.http.method:",
        ),
        (
            '    http: {url: "https://h.example/", headers: {X-A: "1\\r\\nX-B: 2"}}\n',
            "jobs.j.http.headers.X-A: a header value must be one line (no CR, LF or NUL)",
        ),
        (
            '    http: {url: "https://h.example/", headers: {"X A": "1"}}\n',
            "jobs.j.http.headers.X A",
        ),
        (
            '    celery: {broker: "redis://r/0", task: t, wait: {timeout: 5s}}\n',
            "jobs.j.celery.wait: wait needs backend: the result backend",
        ),
        (
            '    rq: {redis: "http://r/", func: f}\n',
            "c.yaml:4:17: jobs.j.rq.redis: expected a URL of redis, rediss, unix",
        ),
    ],
)
def test_a_bad_target_names_its_file_line_and_job(tmp_path: Path, job: str, message: str) -> None:
    text = 'jobs:\n  j:\n    schedule: "@daily"\n' + job
    with pytest.raises(ConfigError) as error:
        loads(text, path=tmp_path / "c.yaml", env={"HOME": str(tmp_path)})
    assert message in str(error.value)


def test_a_target_whose_extra_is_missing_says_which_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "celery" else real(name, *a)
    )
    text = 'jobs:\n  j:\n    schedule: "@daily"\n    celery: {broker: "redis://r/0", task: t}\n'
    with pytest.raises(ConfigError) as error:
        loads(text, path=tmp_path / "c.yaml", env={"HOME": str(tmp_path)})
    assert "c.yaml:4:5: jobs.j.celery: a celery target needs the celery package" in str(error.value)
    assert "pip install 'cronplus[celery]'" in str(error.value)
    assert targetfields.client_missing("http") is None


def test_the_installed_cronplus_runs_an_http_job_and_history_shows_the_answer(
    tmp_path: Path, server: HttpRecorder
) -> None:
    cp = Cronplus(tmp_path)
    cp.write(f"""\
        jobs:
          hook:
            schedule: "0 7 * * *"
            http: {{url: "{server.url}/run", method: GET}}
        """)
    done = cp.run("run", "hook")
    assert done.returncode == 0, done.stderr
    assert "hook: succeeded after 1 attempt(s), HTTP 200" in done.stdout
    (row,) = json.loads(cp.run("history", "--json").stdout)
    assert (row["outcome"], row["response"], row["trigger"]) == ("succeeded", "HTTP 200", "run")
    assert server.requests[0].headers["idempotency-key"].startswith("hook@")
