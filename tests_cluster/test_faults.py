"""Issue 21's faults, each on three real nodes over a private PostgreSQL: every slot of
the window runs exactly once (or as the scenario's row says it may), counted from the
record each start appends. tests_cluster/faults.py says what each scenario does.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from privatepg import PrivateServer

from tests_cluster import faults
from tests_cluster.faults import Result

Play = Callable[[str], Result]


@pytest.fixture
def play(tmp_path: Path, server: PrivateServer, script: Path, results: list[Result]) -> Play:
    def run(name: str) -> Result:
        timing = faults.SHORT
        result = faults.run(name, folder=tmp_path, server=server, script=script, timing=timing)
        results.append(result)
        print(result.row())
        assert not result.failures, result.explain()
        return result

    return run


def test_in_steady_state_every_slot_runs_once(play: Play) -> None:
    play("steady")


def test_a_node_paused_past_its_lease_starts_nothing_another_node_took_over(play: Play) -> None:
    play("pause")


def test_a_node_killed_and_restarted_within_its_lease_leaves_no_slot_behind(play: Play) -> None:
    play("kill")


def test_nodes_with_skewed_clocks_run_nothing_early_and_refuse_to_claim(play: Play) -> None:
    if (why := faults.faketime_missing()) is not None:
        from tests_cluster.conftest import cannot_run

        cannot_run(why)
    play("skew")


def test_nodes_with_clocks_a_little_off_claim_and_run_nothing_early(play: Play) -> None:
    if (why := faults.faketime_missing()) is not None:
        from tests_cluster.conftest import cannot_run

        cannot_run(why)
    play("skew-within")


def test_a_database_restart_loses_and_doubles_nothing(play: Play) -> None:
    play("db-restart")


def test_a_database_killed_and_started_again_loses_and_doubles_nothing(play: Play) -> None:
    play("db-kill")


def test_a_differing_file_never_becomes_the_clusters_when_the_good_nodes_miss_a_lease(
    play: Play,
) -> None:
    play("differ")


def test_a_rolling_edit_runs_each_slot_of_the_old_then_the_new_schedule_once(play: Play) -> None:
    play("rolling")


def test_a_whole_cluster_stop_at_a_slot_loses_no_slot(play: Play) -> None:
    play("stop")
