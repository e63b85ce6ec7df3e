"""workbench.processes: who owns a run and whether it still lives; orphaned records settled."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from workbench.processes import host_name, owner_state, settle_orphans, this_process


def _ended_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_live_owner_is_alive_and_an_ended_one_gone():
    me = this_process()
    assert me.host == host_name()
    assert owner_state(me.pid, me.started, me.host) == "alive"
    assert owner_state(_ended_pid(), None, me.host) == "gone"
    assert owner_state(None) == "gone"


def test_a_reused_pid_is_not_the_owner_and_another_host_is_not_judged():
    me = this_process()
    assert owner_state(me.pid, me.started - 3600, me.host) == "gone"  # same pid, another process
    assert owner_state(_ended_pid(), None, "some-other-machine") == "unknown"


def test_settle_orphans_fails_only_running_records_whose_owner_is_gone():
    me = this_process()
    dead = _ended_pid()

    def row(status, pid, host=me.host):
        return SimpleNamespace(status=status, pid=pid, pid_started=None, host=host, error=None, finished_at=None)

    orphan, alive, done, remote = row("running", dead), row("running", me.pid), row("finished", dead), \
        row("running", dead, "some-other-machine")
    assert settle_orphans([orphan, alive, done, remote], error="killed") == [orphan]
    assert (orphan.status, orphan.error) == ("failed", "killed") and orphan.finished_at is not None
    assert [r.status for r in (alive, done, remote)] == ["running", "finished", "running"]
