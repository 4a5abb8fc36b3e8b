"""The audit log for people and files: date ranges as the log compares them, and CSV.

Pure helpers shared by the audit page and ``mesh audit``; the store runs the queries.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import time as clock
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any, Protocol

from mesh import auditchain
from mesh.errors import InvalidInput
from mesh.files import private_dir
from mesh.store import AUDIT_COLUMNS, AnyStore, AuditRow, NewEvent

# OWASP, "CSV Injection": a spreadsheet runs a cell that starts with one of these as a
# formula. A leading single quote makes it text, and shows the value as it was.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def stamp(moment: datetime) -> str:
    """``moment`` as the log writes instants (UTC, milliseconds, Z), so strings compare."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_when(text: str, *, what: str) -> date | datetime:
    """A day (``2026-01-31``) or a moment (``2026-01-31T09:30``, UTC unless it says)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            f"{what} {text!r} is not an ISO date or date and time; write 2026-01-31 or "
            "2026-01-31T09:30 (UTC unless an offset such as +02:00 is given)."
        ) from None


def period(
    since: date | datetime | None, until: date | datetime | None
) -> tuple[str | None, str | None]:
    """The (since, before) instants of a range: a day counts whole, a moment exactly.

    ``until`` is inclusive for people (``--until 2026-01-31`` keeps that day's rows); the
    store compares with an exclusive end, so a day ends at the next midnight and a moment
    one millisecond later (the log's resolution).
    """
    start = _instant(since) if since is not None else None
    end = None
    if isinstance(until, datetime):
        end = _instant(until) + timedelta(milliseconds=1)
    elif until is not None:
        end = _instant(until + timedelta(days=1))
    if start is not None and end is not None and start >= end:
        raise InvalidInput("The date range ends before it starts; swap since and until.")
    return (stamp(start) if start else None, stamp(end) if end else None)


def _instant(value: date | datetime) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time(0), tzinfo=UTC)


def safe_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text, never runs as a formula."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def csv_chunks(rows: Iterable[AuditRow], *, chunk_rows: int = 5000) -> Iterator[str]:
    """The rows as CSV text with a header, ``chunk_rows`` rows a piece, memory flat."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(AUDIT_COLUMNS)
    count = 0
    for row in rows:
        writer.writerow([safe_cell(value) for value in row])
        count += 1
        if count % chunk_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def write_csv(rows: Iterable[AuditRow], out: IO[str]) -> None:
    """Stream the rows to ``out`` as CSV."""
    for piece in csv_chunks(rows):
        out.write(piece)


def csv_bytes(rows: Iterable[AuditRow]) -> bytes:
    """The rows as one UTF-8 CSV file's bytes, for a download.

    Written to a temporary file first, so the text and its encoding never sit in memory
    beside the finished bytes: the download's one copy is the only large thing held.
    """
    with tempfile.TemporaryFile("w+b") as spool:
        with io.TextIOWrapper(spool, encoding="utf-8", newline="") as text:
            write_csv(rows, text)
            text.flush()
            spool.seek(0)
            return spool.read()


# The chain: verify, checkpoints and anchors ---------------------------------------------


def head_record(store: AnyStore, *, at: str, head: tuple[int, str] | None = None) -> dict[str, Any]:
    """The chain's head (``head``, else the last row) as an anchor: row id, its chain, when,
    and a MAC over the three."""
    row_id, chain = head or store.audit_head()
    mac = auditchain.checkpoint_mac(store.audit_key, row_id=row_id, chain=chain, at=at)
    return {"row_id": row_id, "chain": chain, "at": at, "mac": mac}


class Anchor(Protocol):
    """Where the chain's head is published, out of reach of whoever holds the database."""

    def publish(self, store: AnyStore, head: Mapping[str, Any]) -> None: ...
    def last(self, store: AnyStore) -> dict[str, Any] | None: ...


BESIDE = "audit-anchor.json"


class FileAnchor:
    """The head in a JSON file (best on another disk or host than MESH_DB), replaced whole.

    ``path`` None keeps it beside the store's file (``audit-anchor.json``): the default,
    which catches a deleted tail but not someone who can also rewrite that file.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path

    def where(self, store: AnyStore) -> Path:
        return self.path or store.path.parent / BESIDE

    def publish(self, store: AnyStore, head: Mapping[str, Any]) -> None:
        path = self.where(store)
        private_dir(path.parent)  # a folder Mesh makes is 0700, like var/
        fd, partial = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), 0o600)
                json.dump(dict(head), handle)
            os.replace(partial, path)
        finally:
            Path(partial).unlink(missing_ok=True)
        store.add_published(
            row_id=int(head["row_id"]), chain=str(head["chain"]), at=str(head["at"]),
            where=str(path.resolve()),
        )  # fmt: skip

    def last(self, store: AnyStore) -> dict[str, Any] | None:
        """The head last published; a missing file is always a break.

        Whoever cut the log's tail may have deleted the anchor too, and the store's notes
        of past publications can be buried or removed by the same hand, so a missing file
        is never read as a first run: an admin starts the anchor with ``mesh audit anchor
        --init`` (``mesh init`` does for a new database, the demo for its fresh one).
        """
        path = self.where(store)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            published = store.last_published(str(path.resolve()))
            if published is None:
                return {
                    "missing": f"the anchor {path} is missing: it was deleted, and the log's "
                    "tail may have been cut; restore it from a backup, or, for a new or "
                    "restored database, start it with `mesh audit anchor --init`"
                }
            return {
                "missing": f"the anchor {path} is missing, though the head (row "
                f"{published['row_id']}) was published to it at {published['at']}: it was "
                "deleted, and the log's tail may have been cut; restore the anchor from a "
                "backup, or compare with `mesh audit verify --anchor`"
            }
        try:
            found = json.loads(text)
        except ValueError:
            return {"malformed": text[:80]}
        return found if isinstance(found, dict) else {"malformed": text[:80]}


class SnsAnchor:
    """The head published to the central SNS topic; its subscribers keep the history.

    SNS cannot be read back: compare a published head with ``mesh audit verify --anchor``.
    """

    def __init__(self, sns: Any, topic_arn: str) -> None:
        self.sns = sns
        self.topic_arn = topic_arn

    def publish(self, store: AnyStore, head: Mapping[str, Any]) -> None:
        self.sns.publish(
            TopicArn=self.topic_arn,
            Subject="Mesh audit log head",
            Message=json.dumps(dict(head), sort_keys=True),
        )

    def last(self, store: AnyStore) -> dict[str, Any] | None:
        return None


def initialise_anchor(store: AnyStore, anchor: Anchor, *, by: str, at: str) -> dict[str, Any]:
    """Start the anchor afresh at the log's head, audited ``anchor_initialised``.

    For a new database, or one restored from a backup (whose head is older than the
    anchor's). The whole chain must hold first: an anchor never vouches for a broken log.
    """
    found = verify(store)
    if not found.ok:
        raise InvalidInput(
            "The audit log does not verify, so no anchor was started: " + "; ".join(found.problems)
        )
    where = str(anchor.where(store)) if isinstance(anchor, FileAnchor) else type(anchor).__name__
    store.append(
        NewEvent(
            at=at,
            actor=by,
            action="anchor_initialised",
            request_id=None,
            scope="audit",
            details={"where": where, "previous_head": found.head_id},
        )
    )
    head = head_record(store, at=at)
    anchor.publish(store, head)
    return head


def parse_anchor(text: str) -> dict[str, Any]:
    """An anchor given by hand: the JSON a tick published."""
    try:
        found = json.loads(text)
    except ValueError:
        raise InvalidInput(
            "The anchor is not JSON; pass the message a tick published, such as "
            '\'{"row_id": 42, "chain": "...", "at": "...", "mac": "..."}\'.'
        ) from None
    if not isinstance(found, dict):
        raise InvalidInput("The anchor must be a JSON object with row_id, chain, at and mac.")
    return found


def verify(
    store: AnyStore,
    *,
    anchor: Mapping[str, Any] | None = None,
    after: tuple[int, str] | None = None,
) -> auditchain.Verification:
    """Check the chain (all of it, or the rows after ``after``), the triggers and the anchor.

    Streams the rows: memory stays flat at any size. The first break is reported; the
    anchor (the head last published) catches a deleted tail, which leaves a whole chain.
    """
    started = clock.perf_counter()
    prev_id, prev_chain = after or (0, auditchain.GENESIS)
    rows, last_id, last_chain, broken = auditchain.walk(
        store.audit_key, store.iter_chain(after=prev_id), prev_id=prev_id, prev_chain=prev_chain
    )
    head_id, head_chain = (last_id, last_chain) if broken is None else store.audit_head()
    problems = [broken.reason] if broken else []
    missing = store.missing_triggers()
    if missing:
        problems.append(
            "the append-only triggers " + ", ".join(missing) + " are missing: they were dropped"
        )
    if anchor is not None:
        anchored_id = anchor.get("row_id")
        chain_at = (
            {anchored_id: store.audit_chain_at(anchored_id)} if isinstance(anchored_id, int) else {}
        )
        disagreement = auditchain.compare_anchor(
            store.audit_key, dict(anchor), chain_at=chain_at, head_id=head_id
        )
        if disagreement:
            problems.append(disagreement)
    return auditchain.Verification(
        ok=not problems,
        rows=rows,
        first_id=prev_id + 1 if rows else None,
        head_id=head_id,
        head_chain=head_chain,
        broken=broken,
        missing_triggers=missing,
        anchor=dict(anchor) if anchor is not None else None,
        seconds=clock.perf_counter() - started,
        problems=problems,
    )


def verify_tail(
    store: AnyStore, *, at: str, anchor: Mapping[str, Any] | None = None
) -> auditchain.Verification:
    """Check the rows written since the last checkpoint, and record a new one if they hold.

    A checkpoint carries a MAC, so a forged one is passed over. A break records nothing:
    the next check starts from the same place and reports it again.
    """
    after = store.last_checkpoint()
    found = verify(store, anchor=anchor, after=after)
    if found.ok and found.rows:
        store.add_checkpoint(row_id=found.head_id, chain=found.head_chain, rows=found.rows, at=at)
    return found
