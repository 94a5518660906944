"""The capacity part's load generator: streaming sessions held by several processes, so that the client is not the
limit it measures (one Python process reads ~4,000 updates/s on a core), each update counted by the time the worker
made it (its streamed `t`), so that updates a lagging client reads late fall out of the window rather than into the
next one.

    python -m bench.subscribers URL ORIGIN     # one child: JSON commands on stdin, one JSON answer per line
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

import psutil

from bench.clients import BenchError, Subscriber, read_raw_message, streamed_times

PROCESSES = min(os.cpu_count() or 1, 4)
CONNECT_AT_ONCE = 10  # sessions a child opens at a time


@dataclass
class StampedSubscriber(Subscriber):
    """A Subscriber that keeps the server time (ms) of each update it receives."""

    stamps: list[float] = field(default_factory=list)

    async def _listen(self) -> None:
        try:
            while True:
                message = await read_raw_message(self.view._ws)
                if message.msgtype == "PATCH-DOC" and '"t"' in message.content:
                    self.stamps += streamed_times(message.content)
        except BenchError as e:
            self.error = str(e)

    def made_between(self, start_ms: float, end_ms: float) -> int:
        """The updates made in [start_ms, end_ms) that have arrived; forgets those made before start_ms."""
        self.stamps = [t for t in self.stamps if t >= start_ms]
        return sum(t < end_ms for t in self.stamps)


async def _child(url: str, origin: str) -> None:
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    held: list[StampedSubscriber] = []
    try:
        while line := await reader.readline():
            command = json.loads(line)
            if "grow" in command:
                while len(held) < command["grow"]:
                    batch = min(CONNECT_AT_ONCE, command["grow"] - len(held))
                    held += await asyncio.gather(*(StampedSubscriber.connect(url, origin) for _ in range(batch)))
                answer = {"sessions": len(held)}
            else:
                start_ms, end_ms = command["count"]
                errors = [s.error for s in held if s.error]
                answer = {"updates": sum(s.made_between(start_ms, end_ms) for s in held), "errors": errors[:3]}
            print(json.dumps(answer), flush=True)
    finally:
        for subscriber in held:
            subscriber.close()


class SubscriberProcesses:
    """`count` child processes holding streaming sessions of one app page between them."""

    def __init__(self, url: str, origin: str, count: int = PROCESSES) -> None:
        self.children: list[subprocess.Popen] = []
        try:
            for _ in range(count):
                self.children.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.subscribers", url, origin],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                        start_new_session=True,
                    )  # fmt: skip
                )
        except BaseException:
            self.close()
            raise

    def _ask(self, commands: list[dict]) -> list[dict]:
        for child, command in zip(self.children, commands, strict=True):
            child.stdin.write(json.dumps(command) + "\n")
            child.stdin.flush()
        answers = []
        for child in self.children:
            if not (line := child.stdout.readline()):
                raise BenchError(f"subscriber process {child.pid} exited ({child.wait()}): see its errors above")
            answers.append(json.loads(line))
        return answers

    def grow(self, sessions: int) -> None:
        """Hold `sessions` sessions in all, shared evenly."""
        n = len(self.children)
        self._ask([{"grow": sessions // n + (i < sessions % n)} for i in range(n)])

    def updates_made_between(self, start_s: float, end_s: float) -> int:
        """Updates the worker made in [start_s, end_s) (time.time()) that have arrived, over every session."""
        answers = self._ask([{"count": [start_s * 1000, end_s * 1000]}] * len(self.children))
        if errors := [e for a in answers for e in a["errors"]]:
            raise BenchError(f"sessions lost: {errors}")
        return sum(a["updates"] for a in answers)

    def cpu_seconds(self) -> float:
        """The CPU time the children have used so far."""
        return sum(sum(psutil.Process(child.pid).cpu_times()[:2]) for child in self.children)

    def close(self) -> None:
        for child in self.children:
            if child.stdin:
                child.stdin.close()  # the child closes its sessions and exits
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            child.stdout.close()

    def __enter__(self) -> SubscriberProcesses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    asyncio.run(_child(sys.argv[1], sys.argv[2]))
