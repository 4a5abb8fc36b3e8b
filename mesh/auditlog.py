"""The audit log for people and files: date ranges as the log compares them, and CSV.

Pure helpers shared by the audit page and ``mesh audit``; the store runs the queries.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import IO, Any

from mesh.errors import InvalidInput
from mesh.store import AUDIT_COLUMNS, AuditRow

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
