"""The command-line verbs: serve, demo, replay, policy, log, outbox and receipt.

policy check|test, log show|verify|export, outbox status|keys and receipt verify read and check; only
serve, demo and replay run the gateway's core.

Each verb parses its flags, builds what it needs, runs, and returns an exit code: 0 success, 1 a check
that failed (a broken policy, a tampered ledger, a failing policy test), 2 a usage or settings error;
receipt verify also exits 2 for a receipt checked without the gateway's key and 3 for a rejected consent
(``RECEIPT_EXIT_CODES``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__

if TYPE_CHECKING:
    from gateway.sealing import Keyring
    from gateway.settings import Settings

Verb = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    verb: Verb | None = getattr(args, "verb", None)
    if verb is None:
        parser.print_help()
        return 2
    if verb is not _serve:
        from gateway import logs

        logs.configure("auto", "warning")  # verbs print their own results; logs only for trouble
    try:
        return verb(args)
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="consent-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    verbs = parser.add_subparsers(title="verbs")
    _serve_parser(verbs)
    _demo_parser(verbs)
    _replay_parser(verbs)
    _policy_parser(verbs)
    _log_parser(verbs)
    _outbox_parser(verbs)
    _receipt_parser(verbs)
    return parser


# --- serve -----------------------------------------------------------------------------------------


def _serve_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("serve", help="run the gateway (defaults: 127.0.0.1:8080, SQLite, default policy)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--database", help="sqlite:///PATH or postgresql://URL (default sqlite:///consent-gateway.db)"
    )
    p.add_argument(
        "--policy",
        dest="policies",
        action="append",
        type=Path,
        help="policy file (repeatable; the first that applies to a meeting governs it)",
    )
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(verb=_serve)


def _serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    flags = {k: getattr(args, k) for k in ("host", "port", "database", "policies", "log_format", "log_level")}
    return serve(flags)


# --- demo ------------------------------------------------------------------------------------------


def _demo_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("demo", help="play a short meeting through a live gateway and a fake AI service")
    p.add_argument("--width", type=int, default=None, help="terminal width for the side-by-side view")
    p.set_defaults(verb=_demo)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return asyncio.run(run_demo(sys.stdout, width=args.width))


# --- replay ----------------------------------------------------------------------------------------


def _replay_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("replay", help="run recorded generic events through the core, offline")
    p.add_argument("--policy", required=True, type=Path)
    p.add_argument("--platform", default="generic")
    p.add_argument(
        "--out",
        type=Path,
        help="directory for one DESTINATION.jsonl per destination (default: JSON lines on stdout)",
    )
    p.add_argument("events", type=Path, help="JSON-lines file of generic events")
    p.set_defaults(verb=_replay)


def _replay(args: argparse.Namespace) -> int:
    from gateway.replay import replay_file

    return asyncio.run(replay_file(args.policy, args.events, args.out, args.platform, sys.stdout, sys.stderr))


# --- policy ----------------------------------------------------------------------------------------


def _policy_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("policy", help="check or test policy files")
    sub = p.add_subparsers(title="policy verbs")
    check = sub.add_parser("check", help="validate policy files (exit 1 with readable errors)")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(verb=_policy_check)
    test = sub.add_parser("test", help="run policy test cases (default: policies/tests)")
    test.add_argument("dir", nargs="?", type=Path, default=Path("policies/tests"))
    test.set_defaults(verb=_policy_test)


def _policy_check(args: argparse.Namespace) -> int:
    from gateway.policy.load import PolicyError, load_policy

    failed = 0
    for path in args.files:
        try:
            policy = load_policy(path)
        except PolicyError as exc:
            failed += 1
            print(exc, file=sys.stderr)
            continue
        print(f"{path}: ok (policy {policy.name}, revision {policy.short_revision})")
    return 1 if failed else 0


def _policy_test(args: argparse.Namespace) -> int:
    from gateway.policy.testing import run_directory

    return asyncio.run(run_directory(args.dir, sys.stdout))


# --- log -------------------------------------------------------------------------------------------


def _log_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("log", help="read, verify and export the consent ledger and decision log")
    p.add_argument("--database", default=None, help="sqlite:///PATH or postgresql://... (default: as serve)")
    sub = p.add_subparsers(title="log verbs")
    show = sub.add_parser("show", help="list consent records")
    show.add_argument("--meeting")
    show.add_argument("--participant")
    show.add_argument("--format", choices=["table", "json"], default="table")
    show.set_defaults(verb=_log_show)
    verify = sub.add_parser("verify", help="check the hash chain (exit 1 if anything was altered)")
    verify.add_argument("--expect-head", help="head hash kept elsewhere: also detects removed newest entries")
    verify.add_argument("--file", type=Path, help="verify a JSON-lines export instead of the database")
    verify.set_defaults(verb=_log_verify)
    export = sub.add_parser("export", help="export the ledger (or decision log) as jsonl or csv")
    export.add_argument("--format", choices=["jsonl", "csv"], default="jsonl")
    export.add_argument("--what", choices=["ledger", "decisions"], default="ledger")
    export.set_defaults(verb=_log_export)


def _store(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from gateway.settings import load_settings
    from gateway.store import open_store

    settings = load_settings({"database": args.database})
    return open_store(settings.database)


def _log_show(args: argparse.Namespace) -> int:
    from gateway import audit

    async def run() -> int:
        store = _store(args)
        await store.open()
        try:
            await audit.show(
                store,
                meeting_id=args.meeting,
                participant_id=args.participant,
                fmt=args.format,
                out=sys.stdout,
            )
        finally:
            await store.close()
        return 0

    return asyncio.run(run())


def _log_verify(args: argparse.Namespace) -> int:
    from gateway import audit
    from gateway.consent import ledger

    async def run() -> int:
        if args.file is not None:
            with args.file.open(encoding="utf-8") as fh:
                report = ledger.verify_rows(audit.rows_from_jsonl(fh), args.expect_head)
        else:
            store = _store(args)
            await store.open()
            try:
                report = await audit.verify_store(store, args.expect_head)
            finally:
                await store.close()
        print(audit.format_report(report))
        return 0 if report.ok else 1

    return asyncio.run(run())


def _log_export(args: argparse.Namespace) -> int:
    from gateway import audit

    async def run() -> int:
        store = _store(args)
        await store.open()
        try:
            count = await audit.export(store, fmt=args.format, out=sys.stdout, what=args.what)
        finally:
            await store.close()
        print(f"exported {count} records", file=sys.stderr)
        return 0

    return asyncio.run(run())


# --- outbox ----------------------------------------------------------------------------------------


def _outbox_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser(
        "outbox", help="inspect the durable outbox (counts, ages and key ids; never payloads)"
    )
    database_help = "sqlite:///PATH or postgresql://... (default: as serve)"
    p.add_argument("--database", default=None, help=database_help)
    sub = p.add_subparsers(title="outbox verbs")
    status = sub.add_parser("status", help="items by destination, status and reason; oldest pending age")
    # accepted after the verb too; SUPPRESS keeps the group's value when it is given before the verb
    status.add_argument("--database", default=argparse.SUPPRESS, help=database_help)
    status.add_argument("--meeting")
    status.add_argument("--format", choices=["table", "json"], default="table")
    status.set_defaults(verb=_outbox_status)
    keys = sub.add_parser(
        "keys", help="pending sealed parts per key id (exit 1 if a key they need is not configured)"
    )
    keys.add_argument("--database", default=argparse.SUPPRESS, help=database_help)
    keys.set_defaults(verb=_outbox_keys)


STATUS_COLUMNS = ("destination", "status", "reason", "items", "sealed_parts", "oldest_pending_age")


def _outbox_status(args: argparse.Namespace) -> int:
    import json
    import time

    from gateway import audit

    async def run() -> int:
        store = _store(args)
        await store.open()
        try:
            summary = await store.outbox_summary(meeting_id=args.meeting)
        finally:
            await store.close()
        rows = [_status_row(row, time.time()) for row in summary]
        if args.format == "json":
            sys.stdout.writelines(json.dumps(row) + "\n" for row in rows)
            return 0
        table = [{k: "-" if v is None else v for k, v in row.items()} for row in rows]
        sys.stdout.write(audit.format_table(table, STATUS_COLUMNS))
        ages = [row["oldest_pending_age"] for row in rows if row["status"] == "pending"]
        count = sum(int(str(row["items"])) for row in rows if row["status"] == "pending")
        oldest = max((age for age in ages if isinstance(age, float)), default=None)
        print(
            "nothing pending" if oldest is None else f"{count} items pending, the oldest for {_age(oldest)}"
        )
        return 0

    return asyncio.run(run())


def _status_row(row: dict[str, object], now: float) -> dict[str, object]:
    """A summary row for output: the oldest pending item's age in seconds (None for finished items)."""
    shown = {k: v for k, v in row.items() if k != "oldest_created_at"}
    created = row["oldest_created_at"]
    if row["status"] == "pending" and isinstance(created, float):
        shown["oldest_pending_age"] = round(max(0.0, now - created), 1)
    else:
        shown["oldest_pending_age"] = None
    return shown


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


UNREADABLE = "(unreadable)"
"""The key id shown for a stored blob whose header does not parse (altered at rest)."""


def _outbox_keys(args: argparse.Namespace) -> int:
    from gateway.sealing import Keyring
    from gateway.settings import SettingsError, load_settings

    try:
        configured = _configured_keyring(load_settings({"database": args.database}))
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    # key_id_of reads only a blob's header: any keyring parses it, the configured one or a throwaway
    parser = configured or Keyring.generate()

    async def run() -> dict[str, int]:
        store = _store(args)
        await store.open()
        try:
            return dict(await store.sealed_key_ids(_key_id_reader(parser)))
        finally:
            await store.close()

    counts = asyncio.run(run())
    return _print_keys(counts, configured)


def _configured_keyring(settings: Settings) -> Keyring | None:
    """The keys from settings, else the ``outbox_key`` that ``serve`` generated into an existing secrets
    file; read only (a check must not create keys), None when neither is there."""
    from gateway.sealing import Keyring
    from gateway.settings import SettingsError, _default_secrets_path, _read_secrets

    keyring = settings.keyring()
    if keyring is not None:
        return keyring
    path = settings.secrets_file or _default_secrets_path(settings)
    generated = _read_secrets(path).get("outbox_key")
    if generated is None:
        return None
    try:
        return Keyring.parse([generated])
    except ValueError as exc:  # names the position, never the key
        raise SettingsError(f"secrets file {path}: outbox_key: {exc}") from None


def _key_id_reader(keyring: Keyring) -> Callable[[bytes], str]:
    from gateway.sealing import SealingError

    def key_id_of(sealed: bytes) -> str:
        try:
            return keyring.key_id_of(sealed)
        except SealingError:
            return UNREADABLE

    return key_id_of


def _print_keys(counts: dict[str, int], configured: Keyring | None) -> int:
    """A line per key id (configured keys first, in keyring order); 1 if pending parts need a missing key."""
    from gateway import audit

    known = configured.key_ids if configured is not None else ()
    ids = [*known, *sorted(k for k in counts if k not in known)]
    rows = [{"key_id": k, "sealed_parts": counts.get(k, 0), "configured": _role(k, known)} for k in ids]
    sys.stdout.write(audit.format_table(rows, ("key_id", "sealed_parts", "configured")))
    if configured is None:
        print(
            "no outbox keys here (CONSENT_GATEWAY_OUTBOX_KEYS, or a secrets file): cannot compare",
            file=sys.stderr,
        )
        return 0
    missing = sorted(k for k in counts if k not in known)
    unused = [k for k in known[1:] if k not in counts]
    if unused:
        print(f"no pending part needs {', '.join(unused)}: safe to remove from outbox_keys")
    if missing:
        print(f"pending parts need keys that are not configured: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def _role(key_id: str, known: tuple[str, ...]) -> str:
    if not known:
        return "unknown"
    if key_id == known[0]:
        return "active"
    return "yes" if key_id in known else "NO"


# --- receipt ---------------------------------------------------------------------------------------


RECEIPT_EXIT_CODES = """\
exit codes:
  0  valid: signed by the --key given, and the consent it records was accepted
  1  invalid: unreadable, malformed, a key repeated in the JSON, tampered, or another key
  2  unpinned: no --key given, so nothing shows who signed it (also argparse's code for bad usage)
  3  valid signature, but the consent was REJECTED (e.g. indicated by someone else): it grants nothing
"""
RECEIPT_REJECTED = 3


def _receipt_parser(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = verbs.add_parser("receipt", help="check consent receipts")
    sub = p.add_subparsers(title="receipt verbs")
    verify = sub.add_parser(
        "verify",
        help="check a receipt's signature and say what it records (exit 0 only for accepted consent)",
        description="Check a consent receipt's signature and print what it records: the choice, the "
        "outcome, whose consent it is, who indicated it, the purposes and the time.",
        epilog=RECEIPT_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verify.add_argument("file", type=Path, help="the receipt JSON a consent page gave")
    verify.add_argument(
        "--key",
        help="the gateway's public key: a file (JWK set from /.well-known/consent-gateway/receipt-key, "
        "or base64) or the base64 itself; without it only the key inside the receipt is checked",
    )
    verify.set_defaults(verb=_receipt_verify)


def _receipt_verify(args: argparse.Namespace) -> int:
    from gateway.audit import printable
    from gateway.consent import receipts

    try:
        text = args.file.read_text(encoding="utf-8")
        key = None
        if args.key is not None:
            key_path = Path(args.key)
            key = receipts.load_public_key(key_path.read_text() if key_path.is_file() else args.key)
        result, receipt = receipts.verify_json(text, key)
    except (OSError, ValueError) as exc:
        print(f"{args.file}: cannot check: {exc}", file=sys.stderr)
        return 1
    if not result.ok:
        print(f"{args.file}: INVALID ({result.reason})")
        return 1
    record_id, kid = printable(receipt.get("record_id")), printable(receipt["key"]["kid"])
    if not result.key_pinned:
        # anyone can sign a receipt with a key of their own and put it inside: only the gateway's key,
        # from the verifier, shows who signed it
        headline = (f"UNPINNED receipt {record_id}: consistent with the key inside it ({kid}), which proves "
                    "nothing about who signed it; pass --key with the gateway's public key")  # fmt: skip
        code = 2
    elif not receipts.accepted(receipt):
        # the gateway signs rejected attempts too (the ledger keeps them so they are provable): a genuine
        # receipt of one must not read as consent
        outcome = printable(receipt.get("outcome")).upper()
        why = f" ({printable(receipt['reason'])})" if receipt.get("reason") else ""
        headline = (f"valid signature, but this consent was {outcome}{why}: receipt {record_id} signed by "
                    f"key {kid}")  # fmt: skip
        code = RECEIPT_REJECTED
    else:
        headline, code = f"valid receipt {record_id} signed by key {kid}", 0
    print(f"{args.file}: {headline}")
    for name, value in receipts.summary(receipt):
        print(f"  {name + ':':<13} {printable(value)}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
