"""mesh (or python -m mesh): a thin command line over the same use cases as the web app.

The CLI trusts ``--as USER``: running it already takes access to the server, its settings
and its database. Every role and ownership rule still applies to that user.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import mesh.settings
from mesh import approval, auditlog, browse, logs
from mesh.approval import Verdict
from mesh.catalog_index import Query
from mesh.errors import AwsFailure, Forbidden, InvalidInput, MeshError, SettingError
from mesh.models import AccessRequest, AuditEvent
from mesh.moments import iso, utc_now
from mesh.policy import LONGEST_ACCESS
from mesh.services import (
    Services,
    activate_policy,
    adopt_demo_state,
    audit_anchor,
    build,
    check_waiting,
    load_users,
    open_store,
)
from mesh.settings import Mode, Settings, load_settings, resolve_path
from mesh.store import AuditFilters, PgStore
from mesh.store.pg_schema import migrations as pg_migrations
from mesh.workflow import Marketplace

log = logging.getLogger("mesh")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad option as one sentence and exit code 2."""

    def error(self, message: str) -> NoReturn:
        message = _escaped(message)  # argparse quotes the bad argument as it was typed
        raise InvalidInput(f"{message[0].upper()}{message[1:]} (see `{self.prog} --help`).")


def _escaped(text: str) -> str:
    """Write every character a terminal could act on (C0 and C1 controls, lone surrogates,
    other unprintables) as its Python escape, so that echoing what someone typed cannot
    recolour, retitle or clear the terminal that reads the message, or split it in lines.
    """
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _days(text: str) -> int:
    """Read ``--days``: a whole number of days that access may last, as the use case allows."""
    longest = LONGEST_ACCESS.days
    try:
        days = int(text)
    except ValueError:
        days = 0
    if not 1 <= days <= longest:
        raise argparse.ArgumentTypeError(
            f"give a whole number of days from 1 to {longest}, not {text!r}"
        )
    return days


def _utf8_only(argv: Sequence[str]) -> list[str]:
    """Refuse an argument holding bytes that are not UTF-8, before anything uses it.

    Python reads such bytes in argv as lone surrogates, which no terminal, file or database
    takes as text: printing or storing one fails far from where it came in.
    """
    for position, arg in enumerate(argv, start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            try:  # show the bytes as given (\xff), as Python decoded them with surrogateescape
                shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:
                shown = arg
            raise InvalidInput(
                f"Argument {position} ({_escaped(shown)}) holds bytes that are not UTF-8 "
                "text; give every argument as UTF-8."
            ) from None
    return list(argv)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mesh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)

    def verb(name: str, text: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        if json_flag:
            sub.add_argument("--json", action="store_true", help="print JSON")
        return sub

    catalog = verb("catalog", "list the central catalog's databases and tables (the index)")
    catalog.add_argument(
        "--search",
        metavar="TEXT",
        help="only what matches TEXT, best first (names, "
        "descriptions, columns and their comments, owners, domains)",
    )
    verb("sync", "sync the catalog index from Glue: add, change and remove what Glue holds")
    request = verb("request", "request access to a database or a table")
    request.add_argument("--as", dest="user", required=True)
    request.add_argument("--database", required=True)
    request.add_argument("--table")
    request.add_argument("--account", required=True)
    request.add_argument("--reason", required=True)
    request.add_argument(
        "--days",
        type=_days,
        help=f"access ends this many days after the grant (1 to {LONGEST_ACCESS.days})",
    )
    request.add_argument("--columns", help="comma-separated columns: only these are granted")
    requests = verb("requests", "list requests: all, or those USER made")
    requests.add_argument("--as", dest="user")
    requests.add_argument("--status")
    pending = verb("pending", "list what USER may decide now")
    pending.add_argument("--as", dest="user", required=True)
    for name, text in (
        ("approve", "approve pending requests (one comment for all)"),
        ("deny", "deny pending requests (one comment for all)"),
        ("cancel", "cancel your own pending request"),
        ("retry", "retry a failed grant"),
    ):
        sub = verb(name, text)
        if name in ("approve", "deny"):
            sub.add_argument("request_ids", metavar="REQUEST_ID", nargs="+")
        else:
            sub.add_argument("request_id", metavar="REQUEST_ID")
        sub.add_argument("--as", dest="user", required=True)
        if name in ("approve", "deny"):
            sub.add_argument("--comment", required=name == "deny", default="")
    revoke = verb("revoke", "revoke a granted request (owner of the product or admin)")
    revoke.add_argument("request_id", metavar="REQUEST_ID")
    revoke.add_argument("--as", dest="user", required=True)
    revoke.add_argument("--comment", required=True)
    rules = verb("policy", "check the approval policy, or explain what it does", json_flag=False)
    rule_verbs = rules.add_subparsers(dest="policy_verb", required=True, parser_class=_Parser)
    check = rule_verbs.add_parser("check", help="validate a policy file (default: MESH_POLICY)")
    check.add_argument("file", nargs="?", metavar="FILE")
    check.add_argument("--json", action="store_true", help="print JSON")
    activate = rule_verbs.add_parser(
        "activate",
        help="make FILE (or the built-in policy) the one every process must run; audited",
    )
    activate.add_argument("file", nargs="?", metavar="FILE")
    activate.add_argument(
        "--built-in", action="store_true", help="activate the built-in default policy"
    )
    activate.add_argument(
        "--as",
        dest="user",
        help="the admin (of the users file) who activates it; without it, your login name "
        "is recorded as the operator's",
    )
    activate.add_argument("--json", action="store_true", help="print JSON")
    explain = rule_verbs.add_parser(
        "explain", help="print the level, rule, steps and reason for a scope; creates nothing"
    )
    explain.add_argument("--database", required=True)
    explain.add_argument("--table")
    explain.add_argument("--columns", help="comma-separated columns of the table")
    explain.add_argument(
        "--account",
        help="the consumer account; without it, no auto-approval condition that names "
        "accounts applies",
    )
    explain.add_argument("--json", action="store_true", help="print JSON")
    verb(
        "tick",
        "run one pass of the periodic job: expiry, escalations, reminders, warnings, retries",
    )
    reconcile = verb("reconcile", "compare granted requests with what Lake Formation holds")
    reconcile.add_argument("--fix", action="store_true", help="re-apply missing grants")
    reconcile.add_argument(
        "--as",
        dest="user",
        help="the admin who runs it (checked; audited); without it, the system actor reconcile",
    )
    audit = verb("audit", "print the audit log, oldest first; `audit verify` checks its chain")
    audit.add_argument(
        "check",
        nargs="?",
        choices=("verify", "anchor"),
        help="verify: check the whole hash chain, the triggers and the last anchor; exit 1 "
        "and the first broken row when it does not hold; anchor --init: start the anchor "
        "at the head (a new database, or after a restore)",
    )
    audit.add_argument(
        "--init",
        action="store_true",
        help="anchor: start MESH_AUDIT_ANCHOR afresh at the log's head (audited); a missing "
        "anchor file is otherwise always a break",
    )
    audit.add_argument(
        "--anchor",
        help="verify: a head published by tick (its JSON), to compare instead of the last one",
    )
    audit.add_argument("--request", dest="request_id", help="only this request's rows")
    audit.add_argument(
        "--actor", action="append", default=[], help="only this actor's rows (repeatable)"
    )
    audit.add_argument(
        "--action", action="append", default=[], help="only rows of this action (repeatable)"
    )
    audit.add_argument(
        "--since", type=_when, help="from this day or moment (ISO, UTC unless it says)"
    )
    audit.add_argument(
        "--until", type=_when, help="up to this day (the whole day) or moment, included"
    )
    audit.add_argument(
        "--format",
        choices=("text", "csv"),
        default="text",
        help="csv streams every matching row as CSV (cells safe to open in a spreadsheet)",
    )
    demo = verb("demo", "start the demo stand-in and the web app", json_flag=False)
    demo.add_argument("--port", type=int, default=8501, help="web app port (default 8501)")
    demo.add_argument(
        "--standin-port", type=int, default=0, help="moto server port (default: any free port)"
    )
    demo.add_argument(
        "--no-app", action="store_true", help="start only the stand-in, for the CLI and tests"
    )
    verb(
        "hash-password",
        "print a bcrypt hash of a password read from standard input",
        json_flag=False,
    )
    verb(
        "health",
        "check that the store at MESH_DB answers, for a readiness probe (exit 0 ok, 1 not)",
        json_flag=False,
    )
    init = verb(
        "init",
        "create the database at MESH_DB (aws mode), or bring it up to date; safe to rerun",
        json_flag=False,
    )
    init.add_argument(
        "--app-role",
        metavar="ROLE",
        help="PostgreSQL only: grant ROLE (the replicas' own login) what the app needs, and "
        "only SELECT and INSERT on the append-only audit tables; run as the tables' owner",
    )
    backup = verb(
        "backup", "copy the database at MESH_DB to FILE while the app runs", json_flag=False
    )
    backup.add_argument("file", metavar="FILE")
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    moving = verb(
        "migrate-store",
        "copy a SQLite store into a PostgreSQL database (safe to rerun; counts checked)",
        json_flag=False,
    )
    moving.add_argument("--from", dest="source", required=True, metavar="FILE")
    moving.add_argument("--to", dest="target", required=True, metavar="postgresql://...")
    return parser


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))


def _request_line(r: AccessRequest) -> str:
    scope = str(r.scope) if r.table else f"{r.database} (whole database)"
    line = f"{r.id}  {r.status.value:<16} {scope} for {r.account} by {r.requester}"
    if r.error:
        line += f"\n    error: {r.error}"
    return line


def _show_request(request: AccessRequest, as_json: bool, *, progress: str = "") -> int:
    if as_json:
        _print_json(request.to_json())
    else:
        print(_request_line(request))
        if request.needs_approval and request.policy_reason:
            print(f"    policy: {request.policy_reason}")
        if progress:
            print(f"    progress: {progress}")
    if request.error:
        print(f"Request {request.id} failed: {request.error}", file=sys.stderr)
        return 1
    return 0


def _decide_many(m: Marketplace, args: argparse.Namespace) -> int:
    """Decide several requests; 0 when all succeeded, else the highest refusal code (or 1)."""
    outcomes = m.decide_many(args.request_ids, args.user, verb=args.verb, comment=args.comment)
    if args.json:
        _print_json(
            [
                {**o.request.to_json(), "exit_code": o.exit_code}
                if o.request is not None
                else {"id": o.request_id, "error": o.error, "exit_code": o.exit_code}
                for o in outcomes
            ]
        )
    for o in outcomes:
        if o.request is not None and not args.json:
            print(_request_line(o.request))
            if o.request.current_step is not None:
                print(f"    progress: {m.progress(o.request)}")
        if o.error:
            print(f"error: {o.request_id}: {_escaped(o.error)}", file=sys.stderr)
    return max((o.exit_code for o in outcomes), default=0)


def _audit_line(e: AuditEvent) -> str:
    return f"{e.id:>5} {e.at} {e.actor:<10} {e.action:<18} {e.request_id or '-':<11} {e.scope}"


def _catalog(services: Services, args: argparse.Namespace) -> int:
    """Read the index; a store that was never synced is synced first (it says so)."""
    if services.index.last_sync() is None:
        print("The catalog index was never synced; syncing it from Glue now.", file=sys.stderr)
        done = services.sync.run(actor="cli")
        if done.error:
            raise AwsFailure(f"The catalog could not be synced from Glue: {done.error}")
    if args.search is not None:
        return _search(services, args)
    if args.json:
        _print_json(browse.index_json(services.index))
        return 0
    for row in browse.index_database_rows(services.index):
        marks = " ".join(
            m
            for m in (
                row.pii,
                "contains PII" if row.contains_pii else "",
                "NO OWNER" if row.no_owner else "",
                f"level {row.level}, needs approval" if row.sensitive else "",
            )
            if m
        )
        print(f"{row.name:<26} {row.owner:<28} {row.tables:>3} tables  {marks}")
    return 0


def _search(services: Services, args: argparse.Namespace) -> int:
    found = services.index.search(Query(text=args.search, page_size=100))
    if args.json:
        _print_json([browse.entry_json(e) for e in found.entries])
        return 0
    for e in found.entries:
        marks = ", ".join(
            m
            for m in (
                e.pii_summary if e.pii_summary != "none" else "",
                f"level {e.level}, needs approval" if e.needs_approval else "",
            )
            if m
        )
        print(f"{e.kind:<8} {e.name:<40} {e.owner:<28} {marks}")
    more = found.total - len(found.entries)
    if found.capped:  # more matched than a search ranks
        print(f"... {found.count} matched; search for more words to narrow it.", file=sys.stderr)
    elif more > 0:
        print(f"... and {more} more; search for more words to narrow it.", file=sys.stderr)
    return 0


def _sync(services: Services, args: argparse.Namespace) -> int:
    done = services.sync.run(actor=os.environ.get("USER") or "cli")
    if args.json:
        _print_json(done.to_json())
    else:
        print(
            f"synced {done.databases} databases and {done.tables} tables in "
            f"{(done.duration_ms or 0) / 1000:.1f} s ({done.glue_calls} Glue calls): "
            f"{done.added} added, {done.changed} changed, {done.removed} removed"
        )
    if done.error:
        print(f"error: {_escaped(done.error)}", file=sys.stderr)
        return AwsFailure.exit_code
    return 0


def _run_verb(services: Services, args: argparse.Namespace) -> int:
    m = services.marketplace
    single: dict[str, Callable[[], AccessRequest]] = {
        "request": lambda: m.submit(
            args.user,
            database=args.database,
            table=args.table,
            account=args.account,
            reason=args.reason,
            duration=timedelta(days=args.days) if args.days is not None else None,
            columns=args.columns.split(",") if args.columns is not None else None,
        ),
        "revoke": lambda: services.lifecycle.revoke(
            args.request_id, args.user, comment=args.comment
        ),
        "approve": lambda: m.approve(args.request_ids[0], args.user, comment=args.comment),
        "deny": lambda: m.deny(args.request_ids[0], args.user, comment=args.comment),
        "cancel": lambda: m.cancel(args.request_id, args.user),
        "retry": lambda: m.retry(args.request_id, args.user),
    }
    if args.verb in ("approve", "deny") and len(args.request_ids) > 1:
        return _decide_many(m, args)
    if args.verb in single:
        done = single[args.verb]()
        waiting = m.progress(done) if done.current_step is not None else ""
        return _show_request(done, args.json, progress=waiting)
    if args.verb == "catalog":
        return _catalog(services, args)
    if args.verb == "sync":
        return _sync(services, args)
    if args.verb == "policy":
        verdict = m.explain(
            database=args.database,
            table=args.table,
            account=args.account,
            columns=args.columns.split(",") if args.columns is not None else None,
        )
        if args.json:
            _print_json(verdict.to_json())
        else:
            print("\n".join(_explain_lines(verdict)))
        return 0
    if args.verb == "tick":
        report = services.lifecycle.tick().to_json()
        _print_list([report], [f"{k}: {v}" for k, v in report.items()], args.json, single=True)
        for error in report["errors"]:
            print(f"error: {error}", file=sys.stderr)
        return 1 if report["errors"] else 0
    if args.verb == "reconcile":
        user = services.marketplace._user(args.user) if args.user else None
        drift = services.lifecycle.reconcile(user, fix=args.fix)
        _print_list([drift], _drift_lines(drift), args.json, single=True)
        return 0
    if args.verb == "requests":
        found = m.requests(username=args.user, status=args.status)
        _print_list([r.to_json() for r in found], [_request_line(r) for r in found], args.json)
    elif args.verb == "pending":
        items = m.pending_for(args.user)
        _print_list(
            [i.request.to_json() for i in items],
            [
                _request_line(i.request)
                + f"\n    policy: {i.request.policy_reason}\n    progress: {i.progress}"
                for i in items
            ],
            args.json,
        )
    elif args.verb == "audit":
        return _audit(m, args)
    return 0


def _explain_lines(verdict: Verdict) -> list[str]:
    lines = [f"level:    {verdict.level}"]
    lines += [f"  {finding.text}" for finding in verdict.findings] or ["  (nothing classified)"]
    if verdict.needs_approval:
        count = len(verdict.steps)
        lines.append(f"rule:     approval in {count} step{'s' if count > 1 else ''}")
        lines += [f"  {line}" for line in approval.describe_steps(verdict.steps)]
        lines.append("outcome:  waits for approval")
    else:
        lines.append(f"rule:     granted at once: {verdict.auto_reason}")
        lines.append("outcome:  granted at once")
    terms = [
        *([f"at most {verdict.max_days} days"] if verdict.max_days else []),
        *(["a duration or end date is required"] if verdict.require_duration else []),
        *(
            [f"a reason of at least {verdict.min_reason_length} characters"]
            if verdict.min_reason_length
            else []
        ),
    ]
    lines.append(f"terms:    {'; '.join(terms) or 'none'}")
    lines.append(f"reason:   {verdict.reason}")
    return lines


def _check_waiting(settings: Any, rules: Any, users: list[Any], *, source: str) -> None:
    """A policy that would strand a request already waiting is refused before it is live."""
    if not settings.on_postgres and not settings.db_path.exists():
        return
    store = open_store(settings)
    try:
        store.migrate(create=settings.mode is Mode.DEMO)
    except SettingError:
        if settings.on_postgres:  # a database that is not a Mesh store yet: nothing waits
            return
        raise
    check_waiting(store, rules, users, source=source)


def _policy_check(args: argparse.Namespace) -> int:
    """Validate a policy file; with loadable settings, against the users file too."""
    problem = None
    try:
        settings = load_settings()
    except SettingError as exc:
        if not args.file:  # without the settings, MESH_POLICY itself is unknown
            raise
        settings, problem = None, exc.message
    path = Path(args.file) if args.file else (settings.policy_path if settings else None)
    if path is None:
        rules = approval.DEFAULT
        source = "(built-in default)"
    else:
        rules = approval.load(path)
        source = str(path)
    checked_users = None
    if settings is not None:
        try:
            users = load_users(settings.users_path, rules, source=source)
        except approval.PolicyError:
            raise
        except SettingError as exc:  # the users file itself is broken
            problem = exc.message
        else:
            checked_users = str(settings.users_path)
            _check_waiting(settings, rules, users.everyone(), source=source)
    summary: dict[str, Any] = {
        "file": source,
        "valid": True,
        "levels": [level.name for level in rules.levels],
        "parameters": list(rules.parameters),
        "rules": {
            name: "granted at once"
            if rule.auto_approve
            else approval.describe_steps(
                [approval.to_step(s, admins=rules.admins_approve) for s in rule.steps]
            )
            for name, rule in rules.rules.items()
        },
        "users_file": checked_users,
        "users_file_problem": problem,
    }
    if args.json:
        _print_json(summary)
        return 0
    print(f"{source}: valid")
    print(f"levels, least strict first: {', '.join(summary['levels'])}")
    print(f"catalog parameters read: {', '.join(summary['parameters']) or '(none)'}")
    for name, rule in summary["rules"].items():
        print(f"  {name}: {rule if isinstance(rule, str) else ' then '.join(rule)}")
    if checked_users:
        print(f"groups checked against {checked_users}")
    else:
        print(f"groups NOT checked against a users file: {problem}")
    return 0


def _policy_file(name: str) -> Path:
    """FILE as given from here, else as MESH_POLICY reads it (from the project folder)."""
    here = Path(name).expanduser()
    if here.is_absolute() or here.exists():
        return here.resolve()
    return resolve_path(name)


def _policy_activate(settings: Settings, args: argparse.Namespace) -> int:
    """Switch the policy in force, deliberately, after the start-up checks."""
    if bool(args.file) == bool(args.built_in):
        raise InvalidInput("Name the policy FILE to activate, or give --built-in (not both).")
    chosen = replace(settings, policy_path=_policy_file(args.file) if args.file else None)
    who = args.user or getpass.getuser()
    record = activate_policy(chosen, by=f"{who} (mesh policy activate)", user=args.user)
    summary = {
        "source": record.source,
        "fingerprint": record.fingerprint,
        "activated_by": record.activated_by,
        "activated_at": record.activated_at,
    }
    if args.json:
        _print_json(summary)
    else:
        print(f"policy in force: {record.source} ({record.fingerprint})")
        print(f"activated by {record.activated_by} at {record.activated_at}")
        print(
            "Restart every process (web app, scheduled tick) with MESH_POLICY naming it; "
            "until then they may read but not change requests."
        )
    return 0


def _drift_lines(found: dict[str, Any]) -> list[str]:
    lines = [
        f"checked {found['granted_requests']} granted requests at {found['checked_at']}",
        f"missing: {len(found['missing'])}",
        f"unexplained: {len(found['unexplained'])}",
        f"in flight (granting, failed part-way or revoking): {len(found.get('in_flight', []))}",
        f"requests without evidence: {len(found.get('unexplained_requests', []))}",
    ]
    lines += [
        f"  missing   {m['request_id']} {json.dumps(m['grant']['Resource'])}"
        for m in found["missing"]
    ]
    lines += [
        f"  unexplained {u['account']} {json.dumps(u['resource'])} {u['permissions']}"
        for u in found["unexplained"]
    ]
    lines += [
        f"  in flight {i['request_id']} ({i['status']}) {json.dumps(i['grant']['Resource'])}"
        for i in found.get("in_flight", [])
    ]
    lines += [
        f"  no evidence {u['request_id']}: {'; '.join(u['problems'])}"
        for u in found.get("unexplained_requests", [])
    ]
    lines += [
        f"  fixed     {f['request_id']}: {'yes' if f['fixed'] else f['error']}"
        for f in found["fixed"]
    ]
    return lines


def _audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    """Check the whole chain, the triggers and the anchor; 1 when something does not hold."""
    if args.format == "csv" or args.request_id or args.actor or args.action:
        raise InvalidInput(
            "`audit verify` checks the whole log; it takes only --json and --anchor."
        )
    store = open_store(settings)
    store.migrate(create=False)
    anchor: dict[str, Any] | None
    if args.anchor is not None:
        anchor = auditlog.parse_anchor(args.anchor)
    else:
        where = audit_anchor(settings)
        anchor = where.last(store) if where is not None else None
    found = auditlog.verify(store, anchor=anchor)
    if args.json:
        _print_json(found.to_json())
    elif found.ok:
        compared = " and agrees with the last anchor" if anchor is not None else ""
        print(
            f"The audit log verifies: {found.rows} rows, head row {found.head_id} "
            f"({found.head_chain[:16]}...){compared}; checked in {found.seconds:.2f} s."
        )
    else:
        print(f"The audit log does NOT verify ({found.rows} rows read):", file=sys.stderr)
        for problem in found.problems:
            print(f"  {_escaped(problem)}", file=sys.stderr)
    return 0 if found.ok else 1


def _audit_anchor_init(settings: Settings, args: argparse.Namespace) -> int:
    """Start the anchor at the log's head, once the whole chain verifies."""
    if not args.init:
        raise InvalidInput(
            "`audit anchor` needs --init: it starts the anchor afresh at the log's head, "
            "for a new database or after a restore."
        )
    where = audit_anchor(settings)
    if where is None or not isinstance(where, auditlog.FileAnchor):
        raise InvalidInput(
            "MESH_AUDIT_ANCHOR is not a file (it is off, or sns, whose subscribers keep the "
            "history): there is no anchor to start."
        )
    store = open_store(settings)
    store.migrate(create=False)
    head = auditlog.initialise_anchor(store, where, by="cli", at=iso(utc_now()))
    print(
        f"Started the audit anchor {where.where(store)} at row {head['row_id']} "
        "(audited anchor_initialised)."
    )
    return 0


def _when(text: str) -> date | datetime:
    try:
        return auditlog.parse_when(text, what="the date")
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(exc.message[0].lower() + exc.message[1:]) from None


def _audit(m: Marketplace, args: argparse.Namespace) -> int:
    if args.json and args.format == "csv":
        raise InvalidInput("Give --json or --format csv, not both.")
    since, before = auditlog.period(args.since, args.until)
    filters = AuditFilters(
        request_id=args.request_id,
        actors=tuple(args.actor),
        actions=tuple(args.action),
        since=since,
        before=before,
    )
    if args.format == "csv":
        auditlog.write_csv(m.audit_export(filters), sys.stdout)
        return 0
    events = m.audit(filters=filters)
    _print_list([e.to_json() for e in events], [_audit_line(e) for e in events], args.json)
    return 0


def _print_list(
    as_json: list[dict[str, Any]], lines: list[str], use_json: bool, *, single: bool = False
) -> None:
    if use_json:
        _print_json(as_json[0] if single else as_json)
    elif lines:
        print("\n".join(lines))
    else:
        print("(none)")


def _hash_password() -> int:
    import bcrypt

    prompt = sys.stdin.isatty()
    password = getpass.getpass("Password: ") if prompt else sys.stdin.readline().rstrip("\n")
    if not password:
        raise InvalidInput("Give a non-empty password on standard input.")
    if len(password.encode()) > 72:
        raise InvalidInput("bcrypt uses at most 72 bytes of a password; give a shorter one.")
    print(bcrypt.hashpw(password.encode(), bcrypt.gensalt(12)).decode())
    return 0


def _init(settings: Any, *, app_role: str | None = None) -> int:
    """Create the store at MESH_DB, or apply its pending migrations; say which it did."""
    if settings.mode is not Mode.AWS:
        raise InvalidInput(
            "`python -m mesh init` is for MESH_MODE=aws; the demo makes and resets its own "
            "database."
        )
    if app_role is not None and not settings.on_postgres:
        raise InvalidInput(
            "--app-role is for a PostgreSQL MESH_DB; a SQLite file has no roles (its folder's "
            "permissions guard it)."
        )
    path = settings.db_label  # a URL without its password
    existed = settings.db_path.exists() if not settings.on_postgres else None
    where = audit_anchor(settings)  # a setting missing here stops before anything is written
    applied = open_store(settings).migrate(create=True)
    if existed is None:  # PostgreSQL: new when its first migration has just run
        existed = not applied or applied[0] != pg_migrations()[0][0]
    if not existed:
        print(f"Created the database {path} (MESH_DB) with {len(applied)} migrations.")
        if isinstance(where, auditlog.FileAnchor):  # a new log: its anchor starts with it
            store = open_store(settings)
            auditlog.initialise_anchor(store, where, by="cli init", at=iso(utc_now()))
            print(f"Started the audit anchor {where.where(store)}.")
    elif applied:
        print(
            f"The database {path} (MESH_DB) already existed; applied {len(applied)} "
            f"pending migration{'s' if len(applied) > 1 else ''}: {', '.join(applied)}."
        )
    else:
        print(f"The database {path} (MESH_DB) already exists and is up to date; nothing to do.")
    if app_role is not None:
        store = open_store(settings)
        assert isinstance(store, PgStore)  # on_postgres
        store.grant_app_role(app_role)
        print(
            f"Granted role {app_role} the app's rights on {path}: it may read and write the "
            "store, and only read and append to the audit log (audit, audit_checkpoints, "
            "reconcile_reports). Run the replicas and `tick` as that role."
        )
    return 0


HEALTH_TIMEOUT = 3.0
"""Seconds `mesh health` waits for a PostgreSQL server (readiness probes time out early)."""


def _health(settings: Any) -> int:
    """One read of the store: what a replica needs before it can serve a page.

    A failure (server down, file gone, tables missing) is the store's own sentence and
    exit 1, the usual handling of StorageError.
    """
    # a probe has a few seconds: a server that cannot be reached fails it in HEALTH_TIMEOUT
    store = PgStore(settings.db, timeout=HEALTH_TIMEOUT) if settings.on_postgres else None
    last, _ = (store or open_store(settings)).audit_head()
    rows = f"{last} row{'' if last == 1 else 's'}"
    print(f"ok: the store {settings.db_label} (MESH_DB) answers; its audit log has {rows}.")
    return 0


def _backup(settings: Any, args: argparse.Namespace) -> int:
    """Copy MESH_DB to FILE with SQLite's online backup; the app may keep running."""
    if settings.on_postgres:
        raise InvalidInput(
            f"MESH_DB is PostgreSQL ({settings.db_label}): back it up with pg_dump (or the "
            "managed service's snapshots); `mesh backup` copies SQLite files."
        )
    target = Path(args.file).absolute()
    counts = open_store(settings).backup(target, force=args.force)
    print(
        f"Backed up {settings.db_path} (MESH_DB) to {target}: {counts['requests']} requests, "
        f"{counts['audit']} audit rows."
    )
    return 0


def _migrate_store(args: argparse.Namespace) -> int:
    """Copy --from (SQLite) into --to (PostgreSQL); 1 when a count or the chain disagrees."""
    from mesh import migrate_store

    source = Path(args.source).expanduser().absolute()
    outcome = migrate_store.migrate_store(source, args.target)
    print("\n".join(migrate_store.report_lines(outcome, source=source, target_url=args.target)))
    if outcome.mismatched:
        tables = ", ".join(c.table for c in outcome.mismatched)
        print(
            f"error: the row counts of {tables} differ between the source and the target; "
            "stop every app and tick on both, look at that table, then copy again.",
            file=sys.stderr,
        )
        return 1
    key = os.environ.get("MESH_AUDIT_KEY") or mesh.settings.read_secrets().get("MESH_AUDIT_KEY")
    if not key:
        print("The audit chain was copied as it is; `mesh audit verify` checks it on the target.")
        return 0
    problems = migrate_store.verify_chain(args.target, str(key))
    if problems:
        print(
            f"error: the audit log on the target does not verify with MESH_AUDIT_KEY: "
            f"{_escaped(problems[0].rstrip('.'))}.",
            file=sys.stderr,
        )
        return 1
    print("The audit log on the target verifies with MESH_AUDIT_KEY.")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code (the README's table; 130 on Ctrl-C).

    A reader that stops early (`mesh catalog --json | head`) ends the command quietly with
    141, as a shell reports for a program that SIGPIPE stopped, and without a traceback.
    """
    _tolerant_output()
    try:
        code = _run_command(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning when Python exits
    except BrokenPipeError:
        return _reader_gone()
    return code


def _tolerant_output() -> None:
    """Print what the output's encoding cannot hold as backslash escapes, never fail on it."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def _reader_gone() -> int:
    """Point stdout at /dev/null, so Python's last flush at exit cannot fail again; 141."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout has no file descriptor (captured in-process)
        pass
    return 141


def _audit_refusal(services: Services, args: argparse.Namespace, exc: Forbidden) -> None:
    """Audit what a role did not allow (``--as USER``), as the web app does."""
    try:
        services.marketplace.record_refusal(
            str(getattr(args, "user", None) or "cli"), what=f"cli {args.verb}", why=exc.message
        )
    except MeshError:  # auditing a refusal must not hide the refusal itself
        log.warning("could not audit a refused action", exc_info=True)


def _run_command(argv: Sequence[str]) -> int:
    logs.configure(os.environ)
    try:
        args = _parser().parse_args(_utf8_only(argv))
        if args.verb == "hash-password":
            return _hash_password()
        if args.verb == "migrate-store":  # needs no settings: both stores are named
            return _migrate_store(args)
        if args.verb == "policy" and args.policy_verb == "check":
            return _policy_check(args)
        settings = load_settings()
        if args.verb == "init":
            return _init(settings, app_role=args.app_role)
        if args.verb == "backup":
            return _backup(settings, args)
        if args.verb == "health":
            return _health(settings)
        if args.verb == "policy" and args.policy_verb == "activate":
            return _policy_activate(adopt_demo_state(settings), args)
        if args.verb != "demo":
            settings = adopt_demo_state(settings)
        if args.verb == "demo":
            from mesh.demo.launcher import run_demo

            if settings.mode is not Mode.DEMO:
                raise InvalidInput("`python -m mesh demo` runs only with MESH_MODE=demo.")
            return run_demo(
                settings, port=args.port, standin_port=args.standin_port, with_app=not args.no_app
            )
        if args.verb == "audit" and args.check == "verify":
            return _audit_verify(settings, args)
        if args.verb == "audit" and args.check == "anchor":
            return _audit_anchor_init(settings, args)
        services = build(settings)
        try:
            return _run_verb(services, args)
        except Forbidden as exc:
            _audit_refusal(services, args, exc)
            raise
    except MeshError as exc:
        print(f"error: {_escaped(exc.message)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise  # main() ends the command quietly
    except Exception as exc:
        log.debug("unexpected failure", exc_info=True)
        print(
            "error: an unexpected failure stopped the command "
            f"({type(exc).__name__}: {_escaped(str(exc))}); "
            "run with MESH_LOG=debug for details (secrets are masked in its output).",
            file=sys.stderr,
        )
        return 1
