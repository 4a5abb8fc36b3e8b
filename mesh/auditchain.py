"""The audit log's hash chain: each row's MAC covers its content and the previous row's MAC.

The MAC is an HMAC-SHA256 keyed with ``MESH_AUDIT_KEY``, a secret kept out of the database:
whoever can write the SQLite file but lacks the key cannot edit, insert, delete, reorder or
renumber a row without breaking the chain from that row on. A deleted tail leaves a shorter
chain that is still whole, so the chain's head is also published elsewhere (an anchor, see
``Anchor``) and compared. Pure functions only: the store calls them below ``append``.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
"""The "previous MAC" of the first row."""

# The triggers that keep the log, its checkpoints and the reconcile reports append-only;
# verify reports any that is missing.
TRIGGERS = (
    "audit_no_update",
    "audit_no_delete",
    "audit_checkpoints_no_update",
    "audit_checkpoints_no_delete",
    "reconcile_reports_no_update",
    "reconcile_reports_no_delete",
)

ChainedRow = tuple[int, str, str, str, str | None, str | None, str | None, str | None]
"""id, at, actor, action, request_id, scope, details, chain: an audit row as stored."""


# One encoder for every row: json.dumps with options builds a new one per call, which was a
# third of the time of a verify. Its output is json.dumps(row, ensure_ascii=False,
# separators=(",", ":")), the same for a list or a tuple.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def key_bytes(key: str) -> bytes:
    return key.encode("utf-8")


def row_mac(key: bytes, prev: str, row: Iterable[Any]) -> str:
    """The MAC of one row (id, at, actor, action, request_id, scope, details) after ``prev``."""
    payload = _encode(list(row))
    return hmac.digest(key, f"{prev}\n{payload}".encode(), "sha256").hex()


def checkpoint_mac(key: bytes, *, row_id: int, chain: str, at: str) -> str:
    """The MAC of a checkpoint or anchor: the head (row id and its chain) at a moment."""
    return hmac.digest(key, f"head\n{row_id}\n{chain}\n{at}".encode(), "sha256").hex()


def published_mac(key: bytes, *, row_id: int, chain: str, at: str, where: str) -> str:
    """The MAC of a note that the head was published to the anchor at ``where`` (a file's
    path): another domain than checkpoint_mac, so a note never passes for a checkpoint."""
    return hmac.digest(key, f"published\n{row_id}\n{chain}\n{at}\n{where}".encode(), "sha256").hex()


@dataclass(frozen=True, kw_only=True)
class Break:
    """The first row where the chain does not hold, and why."""

    row_id: int | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"row_id": self.row_id, "reason": self.reason}


@dataclass(frozen=True, kw_only=True)
class Verification:
    """What a pass over (part of) the chain found."""

    ok: bool
    rows: int  # rows checked in this pass
    first_id: int | None  # the first row checked
    head_id: int  # the last row of the log (0 when empty)
    head_chain: str
    broken: Break | None = None
    missing_triggers: tuple[str, ...] = ()
    anchor: dict[str, Any] | None = None  # the anchor compared with, if any
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "rows_checked": self.rows,
            "first_id": self.first_id,
            "head": {"row_id": self.head_id, "chain": self.head_chain},
            "broken": self.broken.to_json() if self.broken else None,
            "missing_triggers": list(self.missing_triggers),
            "anchor": self.anchor,
            "seconds": round(self.seconds, 3),
            "problems": self.problems,
        }


def walk(
    key: bytes,
    rows: Iterable[ChainedRow],
    *,
    prev_id: int = 0,
    prev_chain: str = GENESIS,
) -> tuple[int, int, str, Break | None]:
    """Check rows in id order after (prev_id, prev_chain): (rows, last id, last chain, break).

    Streams: only the previous row's id and MAC are kept. Stops at the first break.
    """
    count = 0
    digest, encode = hmac.digest, _encode
    for row in rows:
        row_id, chain = row[0], row[7]
        count += 1
        payload = encode(row[:7])
        expected = digest(key, f"{prev_chain}\n{payload}".encode(), "sha256").hex()
        if chain is None or not hmac.compare_digest(expected, chain):
            return count, prev_id, prev_chain, Break(row_id=row_id, reason=_why(row, prev_id))
        prev_id, prev_chain = row_id, chain
    return count, prev_id, prev_chain, None


def _why(row: ChainedRow, prev_id: int) -> str:
    row_id, chain = row[0], row[7]
    if chain is None:
        return f"row {row_id} carries no chain: it was inserted without the audit key"
    if row_id != prev_id + 1:
        gap = f"row {prev_id + 1}" if row_id == prev_id + 2 else f"rows {prev_id + 1}-{row_id - 1}"
        if row_id <= prev_id:
            return f"row {row_id} comes after row {prev_id}: the rows were renumbered or reordered"
        return (
            f"{gap} before row {row_id} are missing, or row {row_id} was renumbered: "
            "rows were deleted or renumbered"
        )
    return (
        f"row {row_id} does not match its chain: it was edited, inserted, reordered or "
        "renumbered, or the key (MESH_AUDIT_KEY) is not the one it was written with"
    )


def compare_anchor(
    key: bytes, anchor: dict[str, Any], *, chain_at: dict[int, str | None], head_id: int
) -> str | None:
    """Why the log disagrees with ``anchor`` (a published head), or None when it agrees.

    ``chain_at`` holds the stored chain of the anchor's row (absent when there is no row).
    """
    if "missing" in anchor:
        return str(anchor["missing"])
    try:
        row_id, chain, at = int(anchor["row_id"]), str(anchor["chain"]), str(anchor["at"])
        mac = str(anchor["mac"])
    except (KeyError, TypeError, ValueError):
        return "the anchor is malformed (it needs row_id, chain, at and mac)"
    if not hmac.compare_digest(mac, checkpoint_mac(key, row_id=row_id, chain=chain, at=at)):
        return "the anchor's MAC does not match: it was forged, or made with another key"
    if row_id > head_id:
        return (
            f"the anchor published at {at} names row {row_id}, but the log ends at row "
            f"{head_id}: its tail was deleted (or the file was swapped for an older one)"
        )
    stored = chain_at.get(row_id)
    if stored is None or not hmac.compare_digest(stored, chain):
        return (
            f"row {row_id} differs from the anchor published at {at}: the log was rewritten "
            "or the file swapped"
        )
    return None


def timer() -> float:
    return time.perf_counter()
