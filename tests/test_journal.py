"""The journal: stderr recognised as its stream, each event sent whole over a real
datagram socket standing in for journald, and the ``<N>`` lines where it refuses."""

from __future__ import annotations

import io
import logging
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import installed
import pytest
from conftest import clean_env

from cronplus.core.model import LogFormat
from cronplus.observe import journal, logs
from cronplus.observe.logs import EventLog


def parse(datagram: bytes) -> dict[str, str]:
    """The native protocol read back, as journald reads it."""
    fields: dict[str, str] = {}
    rest = datagram
    while rest:
        line, _, after = rest.partition(b"\n")
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value.decode()
            rest = after
        else:
            (size,) = struct.unpack("<Q", after[:8])
            fields[line.decode()] = after[8 : 8 + size].decode()
            assert after[8 + size : 9 + size] == b"\n"
            rest = after[9 + size :]
    return fields


@pytest.fixture
def journald(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, socket.socket]]:
    address = str(tmp_path_factory.mktemp("jd") / "socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(2.0)
        yield address, sock


def logger_to(handler: logging.Handler) -> EventLog:
    logger = logging.getLogger(f"cronplus.test.{id(handler)}")
    logger.propagate = False
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    return EventLog(logger)


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.CRITICAL, "3"), (logging.ERROR, "3"), (logging.WARNING, "4"), (logging.INFO, "6")],
    ids=["critical", "error", "warning", "info"],
)
def test_each_event_is_one_entry_with_its_priority_and_fields(
    journald: tuple[str, socket.socket], level: int, priority: str
) -> None:
    address, sock = journald
    handler = journal.JournalHandler(io.StringIO(), address=address)
    handler.setFormatter(logs.TextFormatter(stamped=False))

    logger_to(handler).emit(level, "attempt_failed", "job backup failed", job="backup", attempt=2)

    assert parse(sock.recv(65536)) == {
        "MESSAGE": f"{logging.getLevelName(level)} job backup failed job=backup attempt=2",
        "PRIORITY": priority,
        "SYSLOG_IDENTIFIER": "cronplus",
        "CRONPLUS_EVENT": "attempt_failed",
        "CRONPLUS_JOB": "backup",
        "CRONPLUS_ATTEMPT": "2",
    }
    handler.close()


def test_a_multi_line_message_stays_one_entry(journald: tuple[str, socket.socket]) -> None:
    address, sock = journald
    handler = journal.JournalHandler(io.StringIO(), address=address)
    text = (
        "reload rejected, the old jobs keep running:\ncrontab.yaml:3:15: bad\ncrontab.yaml:9:1: bad"
    )

    logger_to(handler).error("reload_failed", text)

    fields = parse(sock.recv(65536))
    assert fields["MESSAGE"] == text
    assert fields["PRIORITY"] == "3"
    handler.close()


def test_where_journald_takes_nothing_each_line_carries_its_priority_on_stderr(
    tmp_path: Path,
) -> None:
    stderr = io.StringIO()
    handler = journal.JournalHandler(stderr, address=str(tmp_path / "no-journald"))

    logger_to(handler).warning("reload_failed", "first line\nsecond line")

    assert stderr.getvalue() == "<4>first line\n<4>second line\n"
    handler.close()


def test_stderr_is_the_journal_only_when_journal_stream_names_it(tmp_path: Path) -> None:
    with (tmp_path / "stream").open("w") as stream, (tmp_path / "other").open("w") as other:
        info = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}

        assert journal.is_journal(stream, env)
        assert not journal.is_journal(other, env)  # inherited by a child with another stderr
        assert not journal.is_journal(stream, {})
        assert not journal.is_journal(stream, {"JOURNAL_STREAM": "garbage"})
        assert not journal.is_journal(io.StringIO(), env)


def test_configure_sends_events_to_journald_only_under_its_stream(tmp_path: Path) -> None:
    logger = logging.getLogger(logs.LOGGER_NAME)
    with (tmp_path / "stream").open("w") as stream:
        info = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        try:
            logs.configure(LogFormat.TEXT, stream=stream, env=env)
            assert [type(h) for h in logger.handlers] == [journal.JournalHandler]
            logs.configure(LogFormat.TEXT, stream=stream, env={})
            assert [type(h) for h in logger.handlers] == [logging.StreamHandler]
        finally:
            logs.configure(LogFormat.TEXT)


def test_a_config_error_at_start_reaches_the_journal_as_an_error(tmp_path: Path) -> None:
    crontab = tmp_path / "crontab.yaml"
    crontab.write_text("jobs:\n  a:\n    schedule: 'often'\n    command: ['true']\n")
    with (tmp_path / "stderr").open("w") as stderr:
        info = os.fstat(stderr.fileno())
        env = {**clean_env(tmp_path), "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
        done = subprocess.run(
            [str(installed.script()), "-c", str(crontab), "daemon"],
            stderr=stderr,
            env=env,
            timeout=60,
            check=False,
        )

    assert done.returncode == 2
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert lines and all(line.startswith("<3>") for line in lines)
    assert f"<3>{crontab}:3:15: jobs.a.schedule:" in lines[0]
