"""What is kept of a session so that another worker can resume it: the first line says whose it is (a digest of
the page's token, the app, the signed-in user), every other line is one PATCH-DOC message its browser sent (the
content JSON as received and its buffers), numbered in the order the session applied them. A record past its size
bound ends with a line saying so, and one with a number missing (a write that failed) cannot be read: neither is
resumed, since half a user's doing is worse than none."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field

VERSION = 1
OVERFLOW = b'{"overflow":true}'


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def key(session_id: str) -> str:
    """Where a session's record is stored: a digest, so that no listing of the store shows a usable session id."""
    return digest(f"bokeh-stack resume {session_id}")


@dataclass(frozen=True)
class Owner:
    token_digest: str
    app: str
    user: str

    def line(self) -> bytes:
        return json.dumps({"v": VERSION, "token": self.token_digest, "app": self.app, "user": self.user}).encode()

    @classmethod
    def of(cls, token: str, app: str, user: str) -> Owner:
        return cls(digest(token), app, user)


@dataclass(frozen=True)
class Entry:
    content_json: str
    buffers: tuple[tuple[str, bytes], ...] = ()

    def line(self, number: int) -> bytes:
        buffers = [[buffer_id, base64.b64encode(data).decode()] for buffer_id, data in self.buffers]
        return json.dumps({"n": number, "c": self.content_json, "b": buffers}, separators=(",", ":")).encode()

    @classmethod
    def of(cls, message) -> Entry:
        """A received PATCH-DOC message, as its browser sent it."""
        buffers = tuple((str(b.id), bytes(b.data)) for b in message.buffers)
        return cls(message.content_json, buffers)


@dataclass
class Record:
    owner: Owner | None = None
    entries: list[Entry] = field(default_factory=list)
    overflowed: bool = False
    size: int = 0  # bytes stored, lines and their ends

    @property
    def ready(self) -> bool:
        """Whether the browser's DocumentReady is among the messages."""
        return any(
            event.get("kind") == "MessageSent" and (event.get("msg_data") or {}).get("name") == "document_ready"
            for entry in self.entries
            for event in json.loads(entry.content_json).get("events") or ()
        )


class RecordError(ValueError):
    """A stored record that cannot be read."""


def parse(lines: list[bytes]) -> Record:
    record = Record(size=sum(len(line) + 1 for line in lines))
    for number, line in enumerate(lines):
        try:
            item = json.loads(line)
            if number == 0:
                if item.get("v") != VERSION:
                    raise RecordError(f"record version {item.get('v')!r}, not {VERSION}")
                record.owner = Owner(item["token"], item["app"], item["user"])
            elif item.get("overflow"):
                record.overflowed = True
            elif item["n"] != len(record.entries) + 1:
                raise RecordError(f"message {len(record.entries) + 1} is missing (a write failed)")
            else:
                buffers = tuple((buffer_id, base64.b64decode(data)) for buffer_id, data in item["b"])
                record.entries.append(Entry(item["c"], buffers))
        except (ValueError, KeyError, TypeError) as e:
            raise RecordError(f"line {number + 1}: {e!r}") from None
    return record


# What a browser sends that is not its user's doing: BokehJS adds again the roots it pulled after a reconnect, and
# says that it reconnected.
NOT_THE_USERS = ("RootAdded", "RootRemoved")
NOT_THE_USERS_EVENTS = ("client_reconnected",)


def users_doing(content: dict) -> bool:
    """Whether a PATCH-DOC from a browser holds something its user did (else it is not kept)."""
    for event in content.get("events") or ():
        kind = event.get("kind")
        if kind in NOT_THE_USERS:
            continue
        if kind == "MessageSent" and (event.get("msg_data") or {}).get("name") in NOT_THE_USERS_EVENTS:
            continue
        return True
    return False


def merge_key(content: dict) -> frozenset | None:
    """What a PATCH-DOC changes when it only sets model properties: {(model id, property)}; None for any other
    message (sessions.Recorder keeps the last of a run of messages with the same key)."""
    events = content.get("events") or ()
    changed = set()
    for event in events:
        if event.get("kind") != "ModelChanged":
            return None
        changed.add((event.get("model", {}).get("id"), event.get("attr")))
    return frozenset(changed) if changed else None
