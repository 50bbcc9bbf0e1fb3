"""The suite's private PostgreSQL server and installed cronplus, shared by every scenario,
and the scenario table printed at the end.

Where no private server can start (no initdb) or libfaketime is missing, a test skips with
the reason; with ``CRONPLUS_REQUIRE_POSTGRES=1`` (CI) that skip is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import installed
import privatepg
import pytest
from privatepg import PrivateServer

from tests_cluster import tally
from tests_cluster.faults import Result

RESULTS = pytest.StashKey[list[Result]]()


def cannot_run(why: str) -> None:
    message = f"cannot run the cluster fault suite ({why})"
    if os.environ.get("CRONPLUS_REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " [CRONPLUS_REQUIRE_POSTGRES=1 makes this a failure]")
    pytest.skip(message)


@pytest.fixture(scope="session")
def server() -> Iterator[PrivateServer]:
    if (why := privatepg.why_not()) is not None:
        cannot_run(why)
    with privatepg.running() as started:
        yield started


@pytest.fixture(scope="session")
def script() -> Path:
    return installed.script()


@pytest.fixture
def results(request: pytest.FixtureRequest) -> list[Result]:
    return request.config.stash.setdefault(RESULTS, [])


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    done = config.stash.get(RESULTS, [])
    if not done:
        return
    terminalreporter.section("cluster faults: slots over each scenario's window")
    for line in [*tally.HEADER.splitlines(), *(r.row() for r in done)]:
        terminalreporter.write_line(line)
    total = sum(r.seconds for r in done)
    terminalreporter.write_line(f"{len(done)} scenarios in {total:.0f} s")
