"""Typed values of the ExoArmur V1 wire contract.

Each dataclass mirrors one JSON shape of ``contracts/v1/*.schema.json`` or
``contracts/openapi.yaml`` (the names follow the Go types in
``internal/contract``, ``internal/gate`` and ``internal/approval``). Every
one is built with ``from_json`` from the object the server sent; fields the
client does not know are ignored, so a server that adds fields (the V1
contract only grows additively) does not break it. Timestamps are parsed to
timezone-aware :class:`datetime.datetime` values (the server's nanoseconds
are cut to microseconds). Fields whose JSON name is a Python keyword are
renamed: ``class`` is ``action_class``, ``pass`` is ``passed``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, cast

__all__ = [
    "ALLOW",
    "DENY",
    "ActionIntent",
    "ApprovalItem",
    "ApprovalRecord",
    "AuditPage",
    "AuditRecord",
    "Check",
    "Decision",
    "ExecutionResult",
    "IntentView",
    "KillSwitchState",
    "Lineage",
    "Mismatch",
    "Outcome",
    "ReplayReport",
    "TenantReport",
    "Vote",
    "parse_time",
]

#: Verdicts of a :class:`Decision`.
ALLOW = "ALLOW"
DENY = "DENY"

_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})?$"
)


def parse_time(value: Optional[str]) -> Optional[datetime]:
    """Parse an RFC 3339 timestamp as the server writes it.

    Go writes up to nine fractional digits and ``Z`` for UTC; Python before
    3.11 accepts neither in :meth:`datetime.fromisoformat`, so the fraction
    is cut to microseconds and ``Z`` becomes ``+00:00`` first. ``None`` or
    ``""`` (an absent time) is ``None``; a timestamp without an offset is
    taken as UTC. Anything else raises :class:`ValueError`.
    """
    if not value:
        return None
    m = _TIME.fullmatch(value)
    if m is None:
        raise ValueError("not an RFC 3339 timestamp: %r" % (value,))
    base, frac, zone = m.groups()
    text = base.replace("t", "T").replace(" ", "T")
    if frac:
        text += "." + (frac + "000000")[:6]
    if zone is None or zone in ("Z", "z"):
        zone = "+00:00"
    parsed = datetime.fromisoformat(text + zone)
    if parsed.tzinfo is None:  # pragma: no cover - the zone is always set above
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed


def _str_map(value: Any) -> Dict[str, str]:
    """A JSON object of strings (absent: empty)."""
    if not isinstance(value, dict):
        return {}
    items = cast(Dict[Any, Any], value)
    return {str(k): str(v) for k, v in items.items()}


def json_object(value: Any) -> Dict[str, Any]:
    """A JSON object (absent or another type: empty). Internal to the package."""
    if not isinstance(value, dict):
        return {}
    items = cast(Dict[Any, Any], value)
    return {str(k): v for k, v in items.items()}


def json_objects(value: Any) -> List[Dict[str, Any]]:
    """A JSON array of objects (absent: empty; non-objects skipped).
    Internal to the package."""
    if not isinstance(value, list):
        return []
    elems = cast(List[Any], value)
    return [json_object(v) for v in elems if isinstance(v, dict)]


def _strs(value: Any) -> List[str]:
    """A JSON array of strings (absent: empty)."""
    if not isinstance(value, list):
        return []
    elems = cast(List[Any], value)
    return [str(v) for v in elems]


def _empty_strs() -> Dict[str, str]:
    return {}


def _empty_obj() -> Dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Check:
    """One ordered check of a decision (``pass`` or ``fail``)."""

    name: str
    outcome: str
    reason: str = ""
    detail: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Check":
        """Build from the JSON object."""
        return cls(
            name=str(d.get("name", "")),
            outcome=str(d.get("outcome", "")),
            reason=str(d.get("reason", "")),
            detail=str(d.get("detail", "")),
        )


@dataclass(frozen=True)
class Decision:
    """The gate's verdict (``ALLOW`` or ``DENY``) with its ordered checks
    (``contracts/v1/decision.schema.json``). ``reasons`` are the failing
    checks' reason codes, e.g. ``approval_required``."""

    tenant: str
    intent_id: str
    intent_hash: str
    verdict: str
    reasons: List[str]
    checks: List[Check]
    policy_hash: str
    decided_at: Optional[datetime]
    schema_version: str = "v1"

    @property
    def allowed(self) -> bool:
        """True when the verdict is ALLOW."""
        return self.verdict == ALLOW

    def check(self, name: str) -> Optional[Check]:
        """The check called ``name`` (e.g. ``"approval"``), or None."""
        for c in self.checks:
            if c.name == name:
                return c
        return None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Decision":
        """Build from the JSON object."""
        return cls(
            tenant=str(d.get("tenant", "")),
            intent_id=str(d.get("intent_id", "")),
            intent_hash=str(d.get("intent_hash", "")),
            verdict=str(d.get("verdict", "")),
            reasons=_strs(d.get("reasons")),
            checks=[Check.from_json(c) for c in json_objects(d.get("checks"))],
            policy_hash=str(d.get("policy_hash", "")),
            decided_at=parse_time(d.get("decided_at")),
            schema_version=str(d.get("schema_version", "v1")),
        )


@dataclass(frozen=True)
class ActionIntent:
    """A stored, hash-bound proposal (``contracts/v1/action_intent.schema.json``).

    ``action_class`` is the JSON ``class`` (A0 observe ... A3 irreversible);
    ``proposer`` is the principal ID of the key that proposed it, the only
    one that may execute it.
    """

    id: str
    tenant: str
    action: str
    action_class: str
    target: str
    idempotency_key: str
    proposer: str
    created_at: Optional[datetime]
    params: Dict[str, str] = field(default_factory=_empty_strs)
    justification: str = ""
    execute_when_approved: bool = False
    hash: str = ""
    schema_version: str = "v1"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ActionIntent":
        """Build from the JSON object."""
        return cls(
            id=str(d.get("id", "")),
            tenant=str(d.get("tenant", "")),
            action=str(d.get("action", "")),
            action_class=str(d.get("class", "")),
            target=str(d.get("target", "")),
            idempotency_key=str(d.get("idempotency_key", "")),
            proposer=str(d.get("proposer", "")),
            created_at=parse_time(d.get("created_at")),
            params=_str_map(d.get("params")),
            justification=str(d.get("justification", "")),
            execute_when_approved=bool(d.get("execute_when_approved", False)),
            hash=str(d.get("hash", "")),
            schema_version=str(d.get("schema_version", "v1")),
        )


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of one execution (``contracts/v1/execution_result.schema.json``).

    ``status`` is ``succeeded``, ``failed`` (the executor ran and reported an
    error, in ``error``) or ``in_doubt`` (started, never finished; never
    re-run). ``output`` is the executor's output, all strings (fs.read:
    ``content``, ``bytes``, ``sha256``; fs.write: ``bytes``, ``sha256``).
    """

    tenant: str
    intent_id: str
    idempotency_key: str
    status: str
    started_at: Optional[datetime]
    output: Dict[str, str] = field(default_factory=_empty_strs)
    error: str = ""
    finished_at: Optional[datetime] = None
    schema_version: str = "v1"

    @property
    def succeeded(self) -> bool:
        """True when the status is ``succeeded``."""
        return self.status == "succeeded"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ExecutionResult":
        """Build from the JSON object."""
        return cls(
            tenant=str(d.get("tenant", "")),
            intent_id=str(d.get("intent_id", "")),
            idempotency_key=str(d.get("idempotency_key", "")),
            status=str(d.get("status", "")),
            started_at=parse_time(d.get("started_at")),
            output=_str_map(d.get("output")),
            error=str(d.get("error", "")),
            finished_at=parse_time(d.get("finished_at")),
            schema_version=str(d.get("schema_version", "v1")),
        )


@dataclass(frozen=True)
class IntentView:
    """An intent as the server shows it (OpenAPI ``IntentView``).

    ``state`` is ``proposed``, ``blocked`` (its last decision denied),
    ``executing``, ``succeeded``, ``failed`` or ``in_doubt``. ``preview`` is
    the verdict computed when it was proposed (a DENY with reason
    ``approval_required`` means an operator must approve it first);
    ``last_decision`` the verdict of its last execution attempt; ``result``
    the result of its execution, once there is one.

    ``created`` is set by :meth:`Client.propose` only: True when that call
    stored the intent (HTTP 201), False when its idempotency key named an
    intent proposed before (HTTP 200; the view is then that intent's). It is
    None on views read with :meth:`Client.get_intent`.
    """

    intent: ActionIntent
    state: str
    preview: Optional[Decision] = None
    last_decision: Optional[Decision] = None
    result: Optional[ExecutionResult] = None
    created: Optional[bool] = None

    @property
    def id(self) -> str:
        """The intent's ID (``intent.id``)."""
        return self.intent.id

    @property
    def approval_required(self) -> bool:
        """True when the preview asked for an operator's approval."""
        return self.preview is not None and "approval_required" in self.preview.reasons

    @classmethod
    def from_json(cls, d: Mapping[str, Any], created: Optional[bool] = None) -> "IntentView":
        """Build from the JSON object."""
        return cls(
            intent=ActionIntent.from_json(d.get("intent") or {}),
            state=str(d.get("state", "")),
            preview=Decision.from_json(d["preview"]) if d.get("preview") else None,
            last_decision=Decision.from_json(d["last_decision"]) if d.get("last_decision") else None,
            result=ExecutionResult.from_json(d["result"]) if d.get("result") else None,
            created=created,
        )


@dataclass(frozen=True)
class Outcome:
    """What an execution returned (OpenAPI ``Outcome``): the gate's ALLOW,
    the execution result, and ``duplicate`` (True when the idempotency key
    had executed before: the result is that first execution's, the executor
    was not called again)."""

    decision: Decision
    result: ExecutionResult
    duplicate: bool

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Outcome":
        """Build from the JSON object."""
        return cls(
            decision=Decision.from_json(d.get("decision") or {}),
            result=ExecutionResult.from_json(d.get("result") or {}),
            duplicate=bool(d.get("duplicate", False)),
        )


@dataclass(frozen=True)
class Vote:
    """One approval or the denial of an approval record."""

    principal: str
    reason: str
    at: Optional[datetime]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Vote":
        """Build from the JSON object."""
        return cls(principal=str(d.get("principal", "")), reason=str(d.get("reason", "")), at=parse_time(d.get("at")))


@dataclass(frozen=True)
class ApprovalRecord:
    """An operator approval of exactly one intent, bound to its hash
    (``contracts/v1/approval_record.schema.json``).

    ``status`` is ``pending``, ``approved`` (``required`` distinct people
    approved), ``denied`` (final), ``expired`` or ``executed`` (the approval
    was consumed by the execution). A pending or approved record past
    ``expires_at`` is expired whatever ``status`` says: see :meth:`status_at`.
    """

    tenant: str
    intent_id: str
    intent_hash: str
    action: str
    action_class: str
    proposer: str
    status: str
    required: int
    approvals: List[Vote]
    requested_at: Optional[datetime]
    expires_at: Optional[datetime]
    denial: Optional[Vote] = None
    executed_at: Optional[datetime] = None
    schema_version: str = "v1"

    def status_at(self, now: Optional[datetime] = None) -> str:
        """The status as the server reads it at ``now`` (default: this
        machine's clock): a pending or approved record past its expiry
        reads ``expired``."""
        now = now or datetime.now(timezone.utc)
        if self.status in ("pending", "approved") and self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return self.status

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ApprovalRecord":
        """Build from the JSON object."""
        return cls(
            tenant=str(d.get("tenant", "")),
            intent_id=str(d.get("intent_id", "")),
            intent_hash=str(d.get("intent_hash", "")),
            action=str(d.get("action", "")),
            action_class=str(d.get("class", "")),
            proposer=str(d.get("proposer", "")),
            status=str(d.get("status", "")),
            required=int(d.get("required", 0)),
            approvals=[Vote.from_json(v) for v in json_objects(d.get("approvals"))],
            requested_at=parse_time(d.get("requested_at")),
            expires_at=parse_time(d.get("expires_at")),
            denial=Vote.from_json(d["denial"]) if d.get("denial") else None,
            executed_at=parse_time(d.get("executed_at")),
            schema_version=str(d.get("schema_version", "v1")),
        )


@dataclass(frozen=True)
class Lineage:
    """Who stands behind one vote: the credential, its owner (the person;
    four eyes counts distinct owners) and the admin who created it."""

    principal: str
    owner: str
    created_by: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Lineage":
        """Build from the JSON object."""
        return cls(principal=str(d.get("principal", "")), owner=str(d.get("owner", "")), created_by=str(d.get("created_by", "")))


@dataclass(frozen=True)
class ApprovalItem:
    """One entry of the approval queue: the approval, its intent, and the
    lineage of each vote."""

    approval: ApprovalRecord
    intent: ActionIntent
    lineage: List[Lineage]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ApprovalItem":
        """Build from the JSON object."""
        return cls(
            approval=ApprovalRecord.from_json(d.get("approval") or {}),
            intent=ActionIntent.from_json(d.get("intent") or {}),
            lineage=[Lineage.from_json(x) for x in json_objects(d.get("lineage"))],
        )


@dataclass(frozen=True)
class KillSwitchState:
    """A kill switch as the serving node reads it
    (``contracts/v1/killswitch_state.schema.json``). ``scope`` is
    ``global`` or the tenant; revision 0 means never set, which is engaged;
    ``fresh`` is False when the node could not confirm its copy is current
    (the gate then blocks)."""

    scope: str
    engaged: bool
    revision: int
    fresh: bool
    actor: str = ""
    reason: str = ""
    at: Optional[datetime] = None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "KillSwitchState":
        """Build from the JSON object."""
        return cls(
            scope=str(d.get("scope", "")),
            engaged=bool(d.get("engaged", True)),
            revision=int(d.get("revision", 0)),
            fresh=bool(d.get("fresh", False)),
            actor=str(d.get("actor", "")),
            reason=str(d.get("reason", "")),
            at=parse_time(d.get("at")),
        )


@dataclass(frozen=True)
class TenantReport:
    """One tenant's chain in a replay report."""

    tenant: str
    records: int
    decisions: int
    chain_ok: bool
    head_seq: int
    head_hash: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "TenantReport":
        """Build from the JSON object."""
        return cls(
            tenant=str(d.get("tenant", "")),
            records=int(d.get("records", 0)),
            decisions=int(d.get("decisions", 0)),
            chain_ok=bool(d.get("chain_ok", False)),
            head_seq=int(d.get("head_seq", 0)),
            head_hash=str(d.get("head_hash", "")),
        )


@dataclass(frozen=True)
class Mismatch:
    """A record whose chain link or re-decided verdict did not match."""

    tenant: str
    seq: int
    kind: str
    reason: str

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Mismatch":
        """Build from the JSON object."""
        return cls(tenant=str(d.get("tenant", "")), seq=int(d.get("seq", 0)), kind=str(d.get("kind", "")), reason=str(d.get("reason", "")))


@dataclass(frozen=True)
class ReplayReport:
    """A replay of a tenant's audit chain (``contracts/v1/replay_report.schema.json``):
    ``passed`` (JSON ``pass``) when every link verifies and every recorded
    decision, re-decided, is identical."""

    passed: bool
    records: int
    decisions: int
    decisions_matched: int
    tenants: List[TenantReport]
    mismatches: List[Mismatch]
    replay_hash: str = ""
    schema_version: str = "v1"

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "ReplayReport":
        """Build from the JSON object."""
        return cls(
            passed=bool(d.get("pass", False)),
            records=int(d.get("records", 0)),
            decisions=int(d.get("decisions", 0)),
            decisions_matched=int(d.get("decisions_matched", 0)),
            tenants=[TenantReport.from_json(t) for t in json_objects(d.get("tenants"))],
            mismatches=[Mismatch.from_json(m) for m in json_objects(d.get("mismatches"))],
            replay_hash=str(d.get("replay_hash", "")),
            schema_version=str(d.get("schema_version", "v1")),
        )


@dataclass(frozen=True)
class AuditRecord:
    """One link of a tenant's hash chain (``contracts/v1/audit_record.schema.json``).

    ``payload`` is the parsed JSON payload. ``raw`` is the whole record as
    parsed; note that re-serialising it does not reproduce the bytes that
    were hashed (verify chains with :meth:`Client.audit_verify`, or the
    ``exoarmur replay`` of an export).
    """

    tenant: str
    seq: int
    kind: str
    correlation_id: str
    actor: str
    time: Optional[datetime]
    payload: Dict[str, Any]
    payload_hash: str
    prev_hash: str
    hash: str = ""
    request_id: str = ""
    schema_version: str = "v1"
    raw: Dict[str, Any] = field(default_factory=_empty_obj, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AuditRecord":
        """Build from the JSON object."""
        return cls(
            tenant=str(d.get("tenant", "")),
            seq=int(d.get("seq", 0)),
            kind=str(d.get("kind", "")),
            correlation_id=str(d.get("correlation_id", "")),
            actor=str(d.get("actor", "")),
            time=parse_time(d.get("time")),
            payload=json_object(d.get("payload")),
            payload_hash=str(d.get("payload_hash", "")),
            prev_hash=str(d.get("prev_hash", "")),
            hash=str(d.get("hash", "")),
            request_id=str(d.get("request_id", "")),
            schema_version=str(d.get("schema_version", "v1")),
            raw=json_object(dict(d)),
        )


@dataclass(frozen=True)
class AuditPage:
    """One page of a tenant's audit chain; pass ``next_after`` as ``after``
    to read the next page.

    ``scope`` is ``tenant`` for a caller that reads the tenant's whole
    chain (operator, admin, auditor) and ``own`` for one that reads only
    the records of its own intents (an agent): its page is a window of
    ``limit`` records of the chain, of which only those are returned, so
    it may hold fewer records, or none, before the chain's end; the end is
    reached when ``next_after - after < limit``. ``intent`` is set on a
    page of one intent's records (``Client.audit(..., intent=...)``), whose
    records end when fewer than ``limit`` came back."""

    tenant: str
    records: List[AuditRecord]
    next_after: int
    scope: str = ""
    intent: str = ""

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "AuditPage":
        """Build from the JSON object."""
        return cls(
            tenant=str(d.get("tenant", "")),
            records=[AuditRecord.from_json(r) for r in json_objects(d.get("records"))],
            next_after=int(d.get("next_after", 0)),
            scope=str(d.get("scope", "")),
            intent=str(d.get("intent", "")),
        )
