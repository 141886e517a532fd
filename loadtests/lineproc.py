"""A child process driven one command at a time: one JSON line on its stdin per command, one JSON
line back on its stdout per answer. The bench's Locust process (locust_session.py) and the edge
phase's runtime workers (edge.py) are both such children.

A reader thread queues the child's lines, so an answer is awaited with a timeout, and the end of
its output (the child died) ends the wait at once instead of hanging.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time


class LineProcess:
    def __init__(self, argv: list[str], *, env: dict[str, str], cwd, stderr=subprocess.DEVNULL,
                 marker: str = ""):  # fmt: skip
        self.marker = marker  # answers start with it; other lines (a library's prints) are skipped
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=stderr, text=True, env=env, cwd=cwd)
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self.proc.stdout:  # closed here, at its end: never under a read in progress
            for line in self.proc.stdout:
                self.lines.put(line)
        self.lines.put(None)

    def send(self, command: dict) -> None:
        """Raises OSError when the child is gone."""
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout_s: float) -> dict | None:
        """The child's next answer; None once its output has ended (it died); TimeoutError when
        no answer came within timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no answer within {timeout_s:g} s") from None
            if line is None:
                self.lines.put(None)  # every later wait ends at once too
                return None
            if line.startswith(self.marker):
                return json.loads(line[len(self.marker):])

    def stop(self, kill: bool = False, wait_s: float = 10) -> None:
        """End the child: close its stdin (end of commands) and wait, killing it if asked or if it
        does not exit within wait_s."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if kill and self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
