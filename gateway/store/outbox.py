"""The durable outbox: what is stored of content on its way to a destination, and the SQL both backends share.

Permitted content is written to the outbox in the same transaction as the decisions that allowed it, before
the event that produced it is acknowledged (invariant 7). Each item is one request to one destination (the
unit of idempotency); each part is one participant's segment (the unit of withdrawal), its payload sealed
with the outbox key (``gateway.sealing``) and bound to its item key and segment id. Once a part is sent,
withdrawn or expired its sealed payload is set to NULL: what remains is ids, a digest and the outcome.

``consent_now`` keeps, per meeting, participant and purpose, the latest accepted choice (and its expiry),
written in the ledger's own transaction. Delivery asks it before sending content whose meeting this process
does not hold in memory (recovered after a restart, taken over from another replica) and before every send
on a shared database, so a withdrawal recorded by any replica stops every replica's sends.

Leases: the process that writes an item owns it for ``lease`` seconds and renews while it works on it; an item
whose lease ran out (its owner died) is claimed by whoever asks next. Delivery is at least once: a crash
between sending and recording the outcome sends again, under the same idempotency key.

Deletion requests: before each attempt to carry a part to a destination that declares an erasure endpoint,
the part's ``attempted_at`` and ``attempted_by`` (the attempt's start and its process's lease owner) are set,
durably, and nothing clears them: what a destination may hold of a participant is every part ``sent`` or
attempted (an attempt that timed out may have arrived), and an attempt of another process may be on the
wire until its start plus the destination's timeout. A withdrawal writes one ``erasures_owed`` row per such
destination in its own transaction (``Purge.erase``). Whoever stages the request claims the row first (its
writer, or a replica that learnt of the withdrawal; one of them), and deletes it once the request's item is
in the outbox: the request survives a crash in between, as whoever finds the row's lease run out (the next
start, another replica) stages it.

SQL is written with ``?`` placeholders; ``numbered()`` turns a statement into PostgreSQL's ``$n`` style.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gateway.model import ConsentChoice, ConsentRecord, RecordOutcome
from gateway.store.columns import unstored

LEASE_SECONDS = 15.0
"""How long an item (or an owed deletion request) stays its writer's without a renewal."""

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
DROPPED = "dropped"
MERGED = "merged"
"""A batched item decided again at its meeting's end (reason ``meeting_ended``): its part went into the
transcript item written in the same transaction, or was dropped there, as the decision log says."""

BATCHED = "batched"
"""The kind of an item holding one part of a meeting-end transcript until the meeting ends. Written with the
decision that allowed it, like any item, so the part survives a restart and every replica's parts are in
one place; never claimed for delivery. At the meeting's end the replica that ends it reads them all, builds
the transcript item, and records these as ``merged`` in the same transaction; a withdrawal purges their
parts like any queued part; past the destination's retention they are dropped as ``expired``."""

HELD = "held"
"""The kind of an item holding one segment held for a destination while consent is pending (or while the
replica could not confirm its consent view), so that a restart or a stopped replica does not lose it: the
segment as it was said, sealed, with when and for whom it is held. Written with the hold decision, before the
event is acknowledged; never claimed for delivery. The replica holding it renews its lease like any item's;
one whose lease ran out (its replica stopped; on SQLite, everything at start) is claimed with
``CLAIM_HELD``, and the segment is held again there and decided at once (``engine.restored``). When the
segment is decided (released, dropped or expired) the item ends ``decided``; released content goes out in an
item of its own. A withdrawal purges it like any queued part; past the destination's retention it is dropped
as ``expired`` (a backstop: the pending window is far shorter)."""
DECIDED = "decided"
"""A held item whose segment was decided again: the decision log says how."""


@dataclass(frozen=True, slots=True)
class SealedPart:
    participant_id: str
    segment_id: str
    digest: str
    """SHA-256 of the sealed plaintext (ids and payload): kept after the payload is gone, so an auditor
    holding a copy of what was sent can show it was this part."""
    sealed: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One request to one destination, as written before the event is acknowledged."""

    key: str
    """The item's idempotency key (unique)."""
    meeting_id: str
    destination: str
    kind: str
    purposes: tuple[str, ...]
    created_at: float
    expires_at: float
    parts: tuple[SealedPart, ...]
    written: tuple[tuple[str, str], ...] = ()
    """Read back from the store: ``(participant id, segment id)`` of every part the item was written with,
    in order, withdrawn ones too (``parts`` holds only those still sealed). A request carrying fewer parts
    than written goes under a key of its own (``gateway.delivery.items.idempotency_key``), the same before
    and after a restart. Empty for an item made here."""


@dataclass(frozen=True, slots=True)
class Purge:
    """Written with a restricting consent record: the participant's queued parts for these destinations go."""

    meeting_id: str
    participant_id: str
    destinations: tuple[str, ...]
    erase: tuple[str, ...] = ()
    """Those of ``destinations`` that declare an erasure endpoint: each is owed a deletion request for what
    it may hold of the participant, recorded (``erasures_owed``) in the same transaction."""


@dataclass(frozen=True, slots=True)
class OwedErasure:
    """A deletion request a withdrawal owes a destination and nobody has staged yet (ids as given)."""

    record_id: str
    destination: str
    meeting_id: str
    participant_id: str


@dataclass(frozen=True, slots=True)
class Attempted:
    """A part (by its item key and segment id) about to be sent, at ``at`` (unix seconds) by ``owner`` (the
    sending process's lease owner)."""

    key: str
    segment_id: str
    at: float
    owner: str


@dataclass(frozen=True, slots=True)
class Finished:
    """How an item ended, as recorded; ``sent`` are the segment ids of the request that was delivered."""

    key: str
    status: str
    reason: str | None
    attempts: int
    http_status: int | None
    sent: tuple[str, ...]
    at: float


@dataclass(frozen=True, slots=True)
class Lease:
    owner: str
    until: float


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``?`` placeholders as ``$1, $2, ...`` (PostgreSQL). The statements here have no ``?`` in literals."""
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _: f"${next(counter)}", sql)


def marks(count: int) -> str:
    return ", ".join("?" for _ in range(count))


INSERT_ITEM = (
    "INSERT INTO outbox (item_key, meeting_id, destination, kind, purposes, created_at, expires_at,"
    " lease_owner, lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item_key) DO NOTHING"
)
INSERT_PART = (
    "INSERT INTO outbox_parts (item_key, ord, meeting_id, participant_id, segment_id, digest, sealed)"
    " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item_key, ord) DO NOTHING"
)
UPSERT_CONSENT_NOW = (
    "INSERT INTO consent_now (meeting_id, subject, purpose, seq, choice, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (meeting_id, subject, purpose) DO UPDATE SET seq = excluded.seq, choice = excluded.choice,"
    " expires_at = excluded.expires_at"
)
FINISH_ITEM = (
    "UPDATE outbox SET status = ?, reason = ?, attempts = ?, http_status = ?, finished_at = ?,"
    " lease_owner = NULL, lease_until = 0 WHERE item_key = ? AND status = 'pending'"
)
MARK_SENT = "UPDATE outbox_parts SET sealed = NULL, state = 'sent' WHERE item_key = ? AND segment_id = ?"
CLEAR_PARTS = "UPDATE outbox_parts SET sealed = NULL, state = ? WHERE item_key = ? AND sealed IS NOT NULL"
RENEW = "UPDATE outbox SET lease_until = ? WHERE lease_owner = ? AND status = 'pending'"
RELEASE = "UPDATE outbox SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = ? AND status = 'pending'"


def _claim(which: str) -> str:
    # Never the claimant's own items: those are in its lanes already (and at start, with ``now`` infinite,
    # the batch just claimed would otherwise be claimed again by the next query).
    return (
        "UPDATE outbox SET lease_owner = ?, lease_until = ?"  # noqa: S608 - a fixed clause, no value
        f" WHERE id IN (SELECT id FROM outbox WHERE status = 'pending' AND lease_until < ? AND {which}"
        " AND (lease_owner IS NULL OR lease_owner <> ?) ORDER BY id LIMIT ?)"
        " RETURNING id, item_key, meeting_id, destination, kind, purposes, created_at, expires_at"
    )


CLAIM = _claim("kind NOT IN ('batched', 'held')")
CLAIM_HELD = _claim("kind = 'held'")
"""Held segments (``HELD``) whose replica stopped renewing their lease."""
SELECT_BATCHED = (
    "SELECT o.item_key, o.destination, o.purposes, o.created_at, o.expires_at, p.participant_id,"
    " p.segment_id, p.digest, p.sealed FROM outbox o JOIN outbox_parts p ON p.item_key = o.item_key"
    " WHERE o.meeting_id = ? AND o.kind = 'batched' AND o.status = 'pending' AND p.sealed IS NOT NULL"
    " ORDER BY o.id, p.ord"
)
SELECT_BATCHED_EXPIRED = (
    "SELECT item_key FROM outbox WHERE kind IN ('batched', 'held') AND status = 'pending' AND expires_at < ?"
    " ORDER BY id"
)
CLAIMED_PARTS = (
    "SELECT participant_id, segment_id, digest, sealed FROM outbox_parts WHERE item_key = ? ORDER BY ord"
)
"""Every part, withdrawn ones too (no payload): ``OutboxItem.written``."""
MARK_ATTEMPTED = (
    "UPDATE outbox_parts SET attempted_at = ?, attempted_by = ? WHERE item_key = ? AND segment_id = ?"
)
INSERT_OWED = (
    "INSERT INTO erasures_owed (record_id, destination, meeting_id, participant_id, created_at, lease_until)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (record_id, destination) DO NOTHING"
)
CLAIM_OWED = (
    "UPDATE erasures_owed SET lease_owner = ?, lease_until = ?"
    " WHERE id IN (SELECT id FROM erasures_owed WHERE lease_until < ? ORDER BY id LIMIT ?)"
    " RETURNING record_id, destination, meeting_id, participant_id"
)
"""Owed deletion requests whose lease ran out: their writer stopped (or failed) before staging them."""
CLAIM_ONE_OWED = (
    "UPDATE erasures_owed SET lease_owner = ?, lease_until = ? WHERE record_id = ? AND destination = ?"
    " AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?) RETURNING id"
)
"""One owed request, unless another process holds it (or it is no longer owed)."""
OWED_DONE = "DELETE FROM erasures_owed WHERE record_id = ? AND destination = ?"


Column = Callable[[str], str]
"""How a backend stores an id in an indexed column (see ``gateway.store.rows.verbatim``)."""


def _same(value: str) -> str:
    return value


def purge_statements(purge: Purge, column: Column = _same) -> list[tuple[str, tuple[object, ...]]]:
    """Withdraw the participant's queued parts of pending items for the named destinations, then end the
    items left with nothing to send as dropped (``withdrawn``)."""
    if not purge.destinations:
        return []
    # only placeholders are interpolated (one per destination); every value is a bound parameter
    dests = marks(len(purge.destinations))
    meeting, participant, destinations = (
        column(purge.meeting_id),
        column(purge.participant_id),
        purge.destinations,
    )
    withdraw_parts = (
        "UPDATE outbox_parts SET sealed = NULL, state = 'withdrawn'"  # noqa: S608
        " WHERE meeting_id = ? AND participant_id = ? AND sealed IS NOT NULL AND item_key IN"
        " (SELECT item_key FROM outbox WHERE meeting_id = ? AND status = 'pending' AND kind <> 'erasure'"
        f" AND destination IN ({dests}))"
    )
    drop_emptied = (
        "UPDATE outbox SET status = 'dropped', reason = 'withdrawn', lease_owner = NULL, lease_until = 0"  # noqa: S608
        f" WHERE meeting_id = ? AND status = 'pending' AND kind <> 'erasure' AND destination IN ({dests})"
        " AND NOT EXISTS"
        " (SELECT 1 FROM outbox_parts p WHERE p.item_key = outbox.item_key AND p.sealed IS NOT NULL)"
    )
    return [
        (withdraw_parts, (meeting, participant, meeting, *map(column, destinations))),
        (drop_emptied, (meeting, *map(column, destinations))),
    ]


def owed_statements(
    record_id: str, purge: Purge, now: float, column: Column = _same
) -> list[tuple[str, tuple[object, ...]]]:
    """The deletion requests a withdrawal owes (``Purge.erase``), written with it; leased to nobody until
    ``now + LEASE_SECONDS``: its writer stages them at once, anyone may once that has passed."""
    meeting, participant = column(purge.meeting_id), column(purge.participant_id)
    return [
        (INSERT_OWED, (column(record_id), column(dest), meeting, participant, now, now + LEASE_SECONDS))
        for dest in purge.erase
    ]


def owed_erasure(row: Sequence[Any]) -> OwedErasure:
    """An owed request from a CLAIM_OWED row (ids decoded)."""
    record_id, destination, meeting, participant = (unstored(str(value)) for value in row)
    return OwedErasure(record_id, destination, meeting, participant)


def attempt_rows(marks: Sequence[Attempted], column: Column = _same) -> list[tuple[object, ...]]:
    """MARK_ATTEMPTED parameters."""
    return [(mark.at, mark.owner, mark.key, column(mark.segment_id)) for mark in marks]


PAIRS_PER_QUERY = 400
"""(meeting, participant) pairs per batched consent query: well under SQLite's bound-parameter limit."""


def blocked_pairs_query(
    pairs: Sequence[tuple[str, str]], purposes: tuple[str, ...], now: float
) -> tuple[str, tuple[object, ...]]:
    """Which of the (already stored-form) pairs' latest accepted choice refuses one of ``purposes``, or
    gave it with an expiry that has passed at ``now`` (unix seconds)."""
    values = ", ".join("(?, ?)" for _ in pairs)
    sql = (
        "SELECT DISTINCT meeting_id, subject FROM consent_now"  # noqa: S608 - placeholders only
        f" WHERE purpose IN ({marks(len(purposes))}) AND (choice <> 'given' OR expires_at <= ?)"
        f" AND (meeting_id, subject) IN (VALUES {values})"
    )
    return sql, (*purposes, now, *(value for pair in pairs for value in pair))


def consent_now_rows(seq: int, record: ConsentRecord, column: Column = _same) -> list[tuple[object, ...]]:
    """``consent_now`` upserts for an accepted record (rejected records change nobody's consent)."""
    if record.outcome is not RecordOutcome.ACCEPTED:
        return []
    choice = ConsentChoice(record.choice).value
    meeting, subject = column(record.meeting_id), column(record.subject)
    expires = None if record.expires_at is None else record.expires_at.timestamp()
    return [(meeting, subject, purpose, seq, choice, expires) for purpose in record.purposes]


def item_rows(
    item: OutboxItem, lease: Lease, column: Column = _same
) -> tuple[tuple[object, ...], list[tuple[object, ...]]]:
    """The item row and its part rows (item keys are gateway-made hex and stored as they are)."""
    meeting = column(item.meeting_id)
    head: tuple[object, ...] = (
        item.key, meeting, column(item.destination), item.kind, ",".join(item.purposes),
        item.created_at, item.expires_at, lease.owner, lease.until,
    )  # fmt: skip
    parts: list[tuple[object, ...]] = [
        (item.key, n, meeting, column(p.participant_id), column(p.segment_id), p.digest, p.sealed)
        for n, p in enumerate(item.parts)
    ]
    return head, parts


def finish_statements(
    done: Sequence[Finished], column: Column = _same
) -> list[tuple[str, list[tuple[object, ...]]]]:
    """The statements recording ``done``, each with its rows of parameters, in the order they run: every
    item's outcome, then its sent parts, then whatever is left of its parts (cleared)."""
    finish: list[tuple[object, ...]] = []
    sent: list[tuple[object, ...]] = []
    clear: list[tuple[object, ...]] = []
    for d in done:
        finish.append((d.status, d.reason, d.attempts, d.http_status, d.at, d.key))
        sent += [(d.key, column(segment)) for segment in d.sent]
        clear.append((clearing_state(d), d.key))
    ordered = ((FINISH_ITEM, finish), (MARK_SENT, sent), (CLEAR_PARTS, clear))
    return [(sql, rows) for sql, rows in ordered if rows]


def clearing_state(done: Finished) -> str:
    """The state of an item's parts that its outcome leaves unsent (withdrawn meanwhile, or never sent):
    their payload goes too."""
    return "withdrawn" if done.status == DELIVERED else (done.reason or done.status)


def claimed_item(head: Sequence[Any], parts: Sequence[Sequence[Any]]) -> OutboxItem:
    """An item from a CLAIM row ``(id, key, meeting, destination, kind, purposes, created, expires)`` and its
    CLAIMED_PARTS rows. The item's columns come back as stored (compared only with other stored values;
    content ids go out inside the sealed payload); its parts' ids as given, since a sealed payload is bound
    to its segment id as given (``gateway.delivery.durable``)."""
    _, key, meeting, destination, kind, purposes, created, expires = head
    ids = [(unstored(str(p[0])), unstored(str(p[1]))) for p in parts]
    return OutboxItem(
        key=str(key),
        meeting_id=str(meeting),
        destination=str(destination),
        kind=str(kind),
        purposes=tuple(p for p in str(purposes).split(",") if p),
        created_at=float(created),
        expires_at=float(expires),
        parts=tuple(
            SealedPart(who, segment, str(p[2]), bytes(p[3]))
            for (who, segment), p in zip(ids, parts, strict=True)
            if p[3] is not None
        ),
        written=tuple(ids),
    )


def batched_item(meeting_id: str, row: Sequence[Any]) -> OutboxItem:
    """A batched item (one part) from a SELECT_BATCHED row; ``meeting_id`` as the caller gave it."""
    key, destination, purposes, created, expires, participant, segment, digest, sealed = row
    return OutboxItem(
        key=str(key),
        meeting_id=meeting_id,
        destination=str(destination),
        kind=BATCHED,
        purposes=tuple(p for p in str(purposes).split(",") if p),
        created_at=float(created),
        expires_at=float(expires),
        parts=(SealedPart(unstored(str(participant)), unstored(str(segment)), str(digest), bytes(sealed)),),
    )
