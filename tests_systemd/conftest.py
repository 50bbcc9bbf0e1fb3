"""The booted container, shared by the whole suite, and what a missing one means.

Where the container cannot boot (no root, no systemd-nspawn, no debootstrap or mirror),
every test skips with the reason; with ``CRONPLUS_REQUIRE_SYSTEMD=1`` (CI) that skip is a
failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import installed
import pytest

from tests_systemd import container


def cannot_boot(why: str) -> None:
    message = f"cannot boot a systemd container ({why}); these tests need root on Linux"
    if os.environ.get("CRONPLUS_REQUIRE_SYSTEMD") == "1":
        pytest.fail(message + " [CRONPLUS_REQUIRE_SYSTEMD=1 makes this a failure]")
    pytest.skip(message)


@pytest.fixture(scope="session")
def machine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[container.Machine]:
    if (why := container.why_not()) is not None:
        cannot_boot(why)
    with contextlib.ExitStack() as stack:
        try:
            booted = stack.enter_context(
                container.booted(installed.wheelhouse(), tmp_path_factory.mktemp("nspawn"))
            )
        except container.CannotBoot as error:
            cannot_boot(str(error))
        yield booted
