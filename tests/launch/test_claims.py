"""Run claims: one holder at a time, stale and same-owner take-over, heartbeats, release."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from classbalanced.launch.claims import (
    claim_alive,
    clear_dead_claims,
    heartbeat,
    read_claim,
    release,
    try_claim,
)


def _race(path, owners, stale_after=60.0):
    barrier = threading.Barrier(len(owners))
    won = []

    def attempt(owner):
        barrier.wait()
        claim = try_claim(path, owner, stale_after=stale_after)
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=attempt, args=(o,)) for o in owners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_exactly_one_of_many_racing_launchers_gets_the_claim(tmp_path):
    for round_ in range(20):
        path = tmp_path / f"run{round_}.claim"
        won = _race(path, [f"launcher-{i}" for i in range(8)])
        assert len(won) == 1
        record = read_claim(path)
        assert [p.name for p in tmp_path.glob(f"run{round_}.claim*")] == [f"run{round_}.claim.0"]
        assert record["token"] == won[0].token and record["owner"] == won[0].owner
        assert record["host"] and record["pid"] == os.getpid() and record["started"] > 0


def test_a_stale_claim_is_taken_over_by_exactly_one(tmp_path):
    for round_ in range(10):
        path = tmp_path / f"run{round_}.claim"
        dead = try_claim(path, "dead-launcher", stale_after=30)
        old = time.time() - 31
        os.utime(dead.path, (old, old))  # its heartbeat stopped 31 s ago
        won = _race(path, [f"launcher-{i}" for i in range(6)], stale_after=30)
        assert len(won) == 1
        assert read_claim(path)["token"] == won[0].token != dead.token
        assert not heartbeat(dead)  # the dead holder, were it to wake up, learns it lost
        release(dead)  # and its release leaves the new claim alone
        assert read_claim(path)["token"] == won[0].token
        assert sorted(p.name for p in tmp_path.glob(f"run{round_}.claim*")) == [
            f"run{round_}.claim.1"
        ]


def test_a_fresh_claim_is_respected_and_the_same_owner_takes_over(tmp_path):
    path = tmp_path / "run.claim"
    first = try_claim(path, "slurm:123_4", stale_after=30)
    old = time.time() - 29
    os.utime(first.path, (old, old))
    assert try_claim(path, "other", stale_after=30) is None  # 29 s < 30 s: alive
    assert heartbeat(first)
    assert read_claim(path)["heartbeat"] > time.time() - 5
    again = try_claim(path, "slurm:123_4", stale_after=30)  # the requeued task
    assert again is not None and again.token != first.token
    assert not heartbeat(first)
    release(first)  # not its claim any more: nothing happens
    assert read_claim(path)["token"] == again.token
    release(again)
    assert read_claim(path) is None and not list(tmp_path.iterdir())


def test_an_unreadable_claim_counts_by_its_age(tmp_path):
    path = tmp_path / "run.claim"
    (tmp_path / "run.claim.3").write_text("{half a rec")
    assert try_claim(path, "a", stale_after=30) is None
    old = time.time() - 60
    os.utime(tmp_path / "run.claim.3", (old, old))
    claim = try_claim(path, "a", stale_after=30)
    assert claim.path.name == "run.claim.4" and not (tmp_path / "run.claim.3").exists()


def test_a_late_take_over_of_a_released_claim_backs_out(tmp_path):
    """B judged A's claim dead; A released and C claimed anew before B acted: B must
    not take C's run (C's claim stays, B gets nothing)."""
    path = tmp_path / "run.claim"
    a = try_claim(path, "a", stale_after=30)
    judged = read_claim(path)
    release(a)
    c = try_claim(path, "c", stale_after=30)
    assert c.path.name == "run.claim.0"
    # B acts on its old judgement: claim number 1 naming A's token as the one taken over
    late = tmp_path / "run.claim.1"
    late.write_text(json.dumps({"owner": "b", "token": "tb", "prev": judged["token"]}))
    assert heartbeat(c)  # a claim that did not take C's over does not stop C
    late.unlink()
    assert try_claim(path, "b", stale_after=30) is None


def test_bad_timeout(tmp_path):
    with pytest.raises(ValueError, match="--stale-after must be a positive number"):
        try_claim(tmp_path / "x.claim", "a", stale_after=0)


def test_claims_left_on_a_finished_run_are_cleared(tmp_path):
    """The holder died after finishing (its task is retried and finds the run done)."""
    path = tmp_path / "run.claim"
    mine = try_claim(path, "ray:session:run", stale_after=30)
    clear_dead_claims(path, "someone-else", stale_after=30)  # fresh and not theirs: kept
    assert read_claim(path)["token"] == mine.token
    clear_dead_claims(path, "ray:session:run", stale_after=30)  # our own earlier attempt
    assert read_claim(path) is None
    dead = try_claim(path, "dead", stale_after=30)
    os.utime(dead.path, (time.time() - 60, time.time() - 60))
    clear_dead_claims(path, "someone-else", stale_after=30)  # stale: cleared
    assert not list(tmp_path.iterdir())


def test_a_claim_whose_process_is_gone_is_taken_over_at_once(tmp_path):
    """A holder on this machine killed with SIGKILL (the out-of-memory killer, `kill -9` of
    a sweep) releases nothing: its claim is taken over without waiting for the heartbeat
    to go stale. A live holder, and one on another machine, are left alone."""
    path = tmp_path / "run.claim"
    code = (
        "import sys; from classbalanced.launch.claims import try_claim; "
        "try_claim(sys.argv[1], 'dead', stale_after=600); print('ok', flush=True); sys.stdin.read()"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=src),
    )
    assert holder.stdout.readline() == "ok\n"
    assert try_claim(path, "me", stale_after=600) is None  # alive
    holder.kill()
    holder.wait()
    elsewhere = {**json.loads((tmp_path / "run.claim.0").read_text()), "host": "elsewhere"}
    (tmp_path / "other.claim.0").write_text(json.dumps(elsewhere))
    claim = try_claim(path, "me", stale_after=600)
    assert claim is not None and claim.path.name == "run.claim.1"
    assert try_claim(tmp_path / "other.claim", "me", stale_after=600) is None


def test_a_claim_being_written_is_held_and_a_non_utf8_one_is_dead(tmp_path):
    base = tmp_path / "run.claim"
    (tmp_path / "run.claim.0").write_bytes(b"")  # created, its record not yet written
    assert try_claim(base, "launcher-b", stale_after=60) is None
    (tmp_path / "run.claim.0").write_bytes(b"\xff\xfe")
    with pytest.warns(UserWarning, match=r"run\.claim\.0 is damaged \(not a UTF-8 claim record\)"):
        record = read_claim(base)
    assert record["damaged"] is True and not claim_alive(record, stale_after=60)
