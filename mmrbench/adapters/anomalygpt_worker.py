"""The AnomalyGPT worker process: start it, speak its JSON-lines protocol, time it out, read its stderr.

AnomalyGPT runs in its own environment (torch 1.13 / transformers 4.29), so the provider talks to
a separate process; this module owns that process and nothing else (the protocol is documented in
:mod:`mmrbench.adapters.anomalygpt` and docs/local-models.md).
"""
from __future__ import annotations

import json
import os
import queue
import shlex
import subprocess
import threading
import time
from collections import deque
from typing import Any

from mmrbench.adapters.anomalygpt_maps import PROTOCOL, WorkerError


class Worker:
    """One worker process: JSON lines in, JSON lines out, stderr kept as a short tail for errors."""

    def __init__(self, argv: list[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
                 startup_timeout_s: float = 1800.0):
        self.argv = argv
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         cwd=cwd, env={**os.environ, **(env or {})}, text=True, encoding="utf-8",
                                         errors="replace", bufsize=1)
        except OSError as exc:
            raise WorkerError(f"cannot start AnomalyGPT worker {shlex.join(argv)}: {exc}") from None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=30)
        self.noise: deque[str] = deque(maxlen=10)
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()
        self.info = self._await_ready(startup_timeout_s)

    def _pump_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr_tail.append(line.rstrip("\n"))

    def tail(self) -> str:
        time.sleep(0.05)  # let the stderr pump catch the last words of a dying worker
        return " | ".join(list(self.stderr_tail)[-5:])

    def _next_json(self, deadline: float) -> dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                raise TimeoutError from None
            if line is None:
                self.proc.wait(timeout=5)
                raise WorkerError(f"worker exited with code {self.proc.returncode}: {self.tail() or 'no stderr'}")
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                self.noise.append(line[:200])  # a library printing to stdout: not protocol, skip
                continue
            if isinstance(obj, dict):
                return obj
            self.noise.append(line[:200])

    def _await_ready(self, timeout_s: float) -> dict[str, Any]:
        try:
            msg = self._next_json(time.monotonic() + timeout_s)
        except TimeoutError:
            self.kill()
            raise WorkerError(f"worker sent no ready line within {timeout_s:.0f} s: {self.tail()}") from None
        if not msg.get("ready"):
            self.kill()
            raise WorkerError(f"worker's first message is not a ready line: {str(msg)[:200]}")
        if msg.get("protocol") != PROTOCOL:
            self.kill()
            raise WorkerError(f"worker speaks protocol {msg.get('protocol')!r}, expected {PROTOCOL!r}")
        return msg

    def ask(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.proc.poll() is not None:
            raise WorkerError(f"worker exited with code {self.proc.returncode}: {self.tail()}")
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise WorkerError(f"cannot write to worker ({exc}): {self.tail()}") from None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                msg = self._next_json(deadline)
            except TimeoutError:
                raise WorkerError(f"worker gave no answer within {timeout_s:.0f} s") from None
            if msg.get("id") == request["id"]:
                return msg

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "shutdown"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=timeout_s)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # only this worker, by its own handle
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
