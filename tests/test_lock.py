"""One restoration per output: the lock beside ``OUT.partial``."""

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from fastscan.lock import LockedError, lock_path, output_lock


def _holder(out, release, *, shared=False):
    """A process that takes the lock of ``out``, says so on stdout and holds it until ``release``
    exists (or until it is killed)."""
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from fastscan.lock import output_lock
        with output_lock({str(out)!r}, shared={shared}, what="test holder"):
            print("locked", flush=True)
            while not os.path.exists({str(release)!r}):
                time.sleep(0.05)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_fails_at_once_naming_the_first(tmp_path):
    out, release = tmp_path / "s.ome.zarr", tmp_path / "release"
    proc = _holder(out, release)
    try:
        with pytest.raises(LockedError) as err:
            with output_lock(out):
                pass
        message = str(err.value)
        assert f"{out}: another restoration is writing this output" in message
        assert f"pid {proc.pid} on host {socket.gethostname()} (test holder" in message
        assert "--wait" in message
    finally:
        release.touch()
        proc.wait(timeout=60)
    # The holder removed its lock file on the way out: nothing stray is left.
    assert not lock_path(out).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release"]


def test_wait_blocks_until_the_holder_ends(tmp_path, caplog):
    out, release = tmp_path / "s.ome.zarr", tmp_path / "release"
    proc = _holder(out, release)
    acquired = threading.Event()

    def second():
        with output_lock(out, wait=True):
            acquired.set()

    with caplog.at_level(logging.INFO, logger="fastscan.lock"):
        thread = threading.Thread(target=second)
        thread.start()
        # The waiter logs whom it waits for; until then it cannot have the lock.
        for _ in range(600):
            if "waiting for" in caplog.text:
                break
            time.sleep(0.05)
        assert f"waiting for pid {proc.pid}" in caplog.text
        assert not acquired.is_set()
        release.touch()
        thread.join(timeout=120)
    proc.wait(timeout=60)
    assert acquired.is_set()
    assert not lock_path(out).exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    out = tmp_path / "s.ome.zarr"
    proc = _holder(out, tmp_path / "never")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    # SIGKILL gave it no chance to clean up: its record is still there, its flock is gone.
    assert f'"pid": {proc.pid}' in lock_path(out).read_text()
    with caplog.at_level(logging.WARNING, logger="fastscan.lock"):
        with output_lock(out):
            assert str(os.getpid()) in lock_path(out).read_text()
            assert str(proc.pid) not in lock_path(out).read_text()
    assert f"taking over the lock of pid {proc.pid}" in caplog.text
    assert not lock_path(out).exists()


def test_part_jobs_share_the_lock_and_keep_whole_runs_out(tmp_path):
    out, release = tmp_path / "s.ome.zarr", tmp_path / "release"
    proc = _holder(out, release, shared=True)
    try:
        with output_lock(out, shared=True, what="part 2"):  # a second part runs beside the first
            with pytest.raises(LockedError, match="test holder"):
                with output_lock(out, what="restore_slide"):
                    pass
        # The first part still holds it: the second did not remove the lock file under it.
        assert lock_path(out).exists()
        with pytest.raises(LockedError):
            with output_lock(out):
                pass
    finally:
        release.touch()
        proc.wait(timeout=60)
    with output_lock(out):  # free once both parts ended
        pass
    assert not lock_path(out).exists()
