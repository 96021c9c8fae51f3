"""The ExoArmur REST API client (standard library only).

:class:`Client` mirrors the Go client in ``internal/api/client``: one method
per API operation, each returning the typed value of ``exoarmur.models``
and raising an :class:`~exoarmur.errors.ExoArmurError` subclass for every
refusal (chosen by the server's error code) or for a server that could not
be reached (:class:`~exoarmur.errors.Unreachable`, naming the URL tried).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from http.client import HTTPException
from typing import Any, Dict, List, Mapping, Optional, Tuple, cast

from .errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalNotRequired,
    ApprovalTimeout,
    ExoArmurError,
    TransportError,
    Unreachable,
    error_class,
)
from .models import (
    ApprovalItem,
    ApprovalRecord,
    AuditPage,
    AuditRecord,
    Decision,
    IntentView,
    KillSwitchState,
    Outcome,
    ReplayReport,
    json_object,
    json_objects,
)

__all__ = ["Client", "DEFAULT_SERVER", "DEFAULT_TIMEOUT", "MAX_RESPONSE", "__version__"]

__version__ = "0.1.0"

#: Where the client looks for ``exoarmur serve`` when neither ``base_url``
#: nor ``EXOARMUR_SERVER`` says (the CLI's ``--server`` default).
DEFAULT_SERVER = "http://127.0.0.1:8080"
#: Seconds each request may take to connect and each read may wait.
DEFAULT_TIMEOUT = 30.0
#: The largest JSON response read; a larger one is an error, never truncated.
MAX_RESPONSE = 16 << 20
#: The largest error body read (an error body is small).
_MAX_ERROR = 1 << 20
#: Records per page when scanning the audit chain (the server's maximum).
_PAGE = 1000

_TENANT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_APPROVAL_STATUSES = ("pending", "approved", "denied", "expired", "executed")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuses redirects: the API never redirects, and following one would
    send the API key to wherever it points."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tenant_path(tenant: str) -> str:
    if not _TENANT.fullmatch(tenant):
        raise ValueError("tenant %r: must match [a-z0-9][a-z0-9-]{0,62}" % (tenant,))
    return "/v1/tenants/" + tenant


def _intent_path(tenant: str, intent_id: str) -> str:
    if not intent_id:
        raise ValueError("an intent ID is required")
    return _tenant_path(tenant) + "/intents/" + urllib.parse.quote(intent_id, safe="")


def _approval_in(rec: AuditRecord, intent_id: str) -> Optional[ApprovalRecord]:
    """The approval record an audit record carries for intent_id, if any.

    approval.requested and approval.executed carry the record as their
    payload; approval.granted, .denied and .expired carry it under
    ``approval`` (internal/approval)."""
    if rec.correlation_id != intent_id or not rec.kind.startswith("approval."):
        return None
    body = json_object(rec.payload.get("approval")) or rec.payload
    if body.get("intent_id") != intent_id or "status" not in body:
        return None
    return ApprovalRecord.from_json(body)


class Client:
    """A client of one ExoArmur server, authenticated with one API key.

    Args:
        base_url: the server, ``http://`` or ``https://`` and a host (e.g.
            ``"http://127.0.0.1:8080"``; a trailing slash is ignored).
            Default: the environment variable ``EXOARMUR_SERVER``, else
            :data:`DEFAULT_SERVER`.
        api_key: the key (``exo_...``) sent as ``Authorization: Bearer``.
            Default (None): the environment variable ``EXOARMUR_API_KEY``;
            ``""`` sends no key at all.
        timeout: seconds each request may take to connect, and each read of
            its answer may wait (a socket timeout, not a total deadline).
        user_agent: the ``User-Agent`` header.

    Raises:
        ValueError: a base URL that is not http(s) with a host, or that
            carries credentials, a query or a fragment.

    A client holds no connection and no mutable state: it is safe to share
    between threads. Every method raises an
    :class:`~exoarmur.errors.ExoArmurError` subclass when the server refuses
    (see ``exoarmur.errors`` for the codes) and
    :class:`~exoarmur.errors.Unreachable` when it cannot be reached.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        api_key: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        user_agent: str = "exoarmur-python/" + __version__,
    ) -> None:
        if base_url is None:
            base_url = os.environ.get("EXOARMUR_SERVER") or DEFAULT_SERVER
        if api_key is None:
            api_key = os.environ.get("EXOARMUR_API_KEY", "")
        url = base_url.rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("server URL %r: must be http:// or https:// and a host, e.g. %s" % (base_url, DEFAULT_SERVER))
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("server URL %r: must not carry credentials, a query or a fragment" % (base_url,))
        if timeout <= 0:
            raise ValueError("timeout must be positive, got %r" % (timeout,))
        self._base = url
        self._key = api_key
        self._timeout = float(timeout)
        self._ua = user_agent
        # Proxies from the environment apply, except to loopback (as Go's
        # http.ProxyFromEnvironment): a local server is never proxied.
        proxy = urllib.request.ProxyHandler({} if _is_loopback(parts.hostname) else None)
        self._opener = urllib.request.build_opener(proxy, _NoRedirect())

    @property
    def base_url(self) -> str:
        """The server this client calls."""
        return self._base

    @property
    def timeout(self) -> float:
        """The per-request socket timeout, in seconds."""
        return self._timeout

    def with_key(self, api_key: str) -> "Client":
        """A client of the same server and timeout with another key."""
        return Client(self._base, api_key, self._timeout, user_agent=self._ua)

    def __repr__(self) -> str:
        return "Client(%r, key=%s)" % (self._base, "set" if self._key else "none")

    # -- transport ---------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        query: Optional[Mapping[str, str]] = None,
        body: Optional[Mapping[str, Any]] = None,
    ) -> Tuple[int, Any]:
        """Send one request; return (status, parsed JSON) of a 2xx answer,
        raise an ExoArmurError for anything else."""
        url = self._base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": "application/json", "User-Agent": self._ua}
        if self._key:
            headers["Authorization"] = "Bearer " + self._key
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=self._timeout) as resp:
                status = resp.status
                raw = resp.read(MAX_RESPONSE + 1)
        except urllib.error.HTTPError as e:
            try:
                raw_err = e.read(_MAX_ERROR)
            except (OSError, HTTPException):
                raw_err = b""
            finally:
                e.close()
            raise self._decode_error(method, path, e.code, e.headers, raw_err) from None
        except urllib.error.URLError as e:
            raise self._transport_error(method, path, e.reason) from e
        except (OSError, HTTPException) as e:  # timeouts and resets while reading
            raise self._transport_error(method, path, e) from e
        if len(raw) > MAX_RESPONSE:
            raise TransportError("the response exceeds the client's limit of %d MiB" % (MAX_RESPONSE >> 20), method=method, path=path)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise TransportError("HTTP %d with a body that is not JSON: %s" % (status, e), method=method, path=path) from None

    def _decode_error(self, method: str, path: str, status: int, headers: Any, raw: bytes) -> ExoArmurError:
        """Turn a non-2xx answer into the exception of its error code."""
        request_id = (headers.get("X-Request-Id") if headers is not None else "") or ""
        try:
            body = json_object(json.loads(raw.decode("utf-8")))
        except ValueError:
            body = {}
        err = json_object(body.get("error"))
        if err.get("code"):
            code = str(err["code"])
            decision = Decision.from_json(json_object(body["decision"])) if body.get("decision") else None
            reasons: List[Any] = err.get("reasons") or []
            return error_class(code)(
                str(err.get("message", "")),
                status=status,
                code=code,
                reasons=[str(r) for r in reasons],
                request_id=str(body.get("request_id") or request_id),
                decision=decision,
                method=method,
                path=path,
            )
        excerpt = raw.decode("utf-8", "replace").strip()
        if len(excerpt) > 200:
            excerpt = excerpt[:200] + "..."
        return ExoArmurError(
            "not an ExoArmur API error body: %r" % (excerpt or "(empty)",),
            status=status,
            request_id=request_id,
            method=method,
            path=path,
        )

    def _transport_error(self, method: str, path: str, reason: Any) -> TransportError:
        """Explain a request that got no HTTP answer; a server that cannot
        be reached is Unreachable, naming it and how to point elsewhere."""
        if isinstance(reason, (socket.timeout, TimeoutError)):
            return TransportError("%s%s: no answer within %gs (timeout)" % (self._base, path, self._timeout), method=method, path=path)
        unreachable = isinstance(reason, (ConnectionRefusedError, socket.gaierror)) or (
            isinstance(reason, OSError) and reason.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
        )
        if unreachable:
            why = "connection refused" if isinstance(reason, ConnectionRefusedError) else str(reason)
            return Unreachable(
                "cannot reach the ExoArmur server at %s (%s). Is `exoarmur serve` running there? "
                "Set EXOARMUR_SERVER (or pass base_url) to the server's URL." % (self._base, why),
                method=method,
                path=path,
            )
        return TransportError("%s%s: %s" % (self._base, path, reason), method=method, path=path)

    # -- health ------------------------------------------------------------

    def health(self) -> None:
        """GET /healthz: returns when the process is up."""
        self._request("GET", "/healthz")

    def ready(self) -> None:
        """GET /readyz: returns when the node's durable store is reachable;
        raises StoreUnavailable (503) when not."""
        self._request("GET", "/readyz")

    # -- intents -----------------------------------------------------------

    def propose(
        self,
        tenant: str,
        action: str,
        target: str,
        params: Optional[Mapping[str, str]] = None,
        idempotency_key: Optional[str] = None,
        justification: Optional[str] = None,
        execute_when_approved: bool = False,
    ) -> IntentView:
        """Propose an action (POST /v1/tenants/{tenant}/intents).

        Args:
            tenant: the tenant ID.
            action: the action type, e.g. ``"fs.write"``.
            target: what it acts on (a sandbox path, a URL).
            params: string parameters (fs.write: ``content``; http.post:
                ``body``); at most 16, names ``[a-z][a-z0-9_]*``.
            idempotency_key: ``[A-Za-z0-9_-]{1,128}``; executes at most
                once per key; proposing the same request with the same key
                again returns the stored intent (``created`` False), a
                different request with it is a Conflict. Default: a fresh
                random key (``py-<hex>``).
            justification: free text recorded with the intent.
            execute_when_approved: have the server's worker execute the
                intent as soon as its approval is complete.

        Returns:
            the stored intent with its preview decision; ``created`` tells
            whether this call stored it. A preview DENY is not an error: the
            intent is stored; the gate decides again at execution.

        Raises:
            TypeError: a param value that is not a string.
            InvalidRequest, UnknownAction, Forbidden, Conflict, NotFound,
            Unauthenticated, StoreUnavailable: the server's refusal.
        """
        body: Dict[str, Any] = {
            "action": action,
            "target": target,
            "idempotency_key": idempotency_key if idempotency_key is not None else "py-" + uuid.uuid4().hex,
        }
        if params:
            for k, v in params.items():
                value = cast(object, v)  # callers without type checking pass anything
                if not isinstance(value, str):
                    raise TypeError("param %r: ExoArmur params are strings, got %s" % (k, type(v).__name__))
            body["params"] = dict(params)
        if justification:
            body["justification"] = justification
        if execute_when_approved:
            body["execute_when_approved"] = True
        status, data = self._request("POST", _tenant_path(tenant) + "/intents", body=body)
        return IntentView.from_json(json_object(data), created=status == 201)

    def get_intent(self, tenant: str, intent_id: str) -> IntentView:
        """An intent, its state, last decision and result
        (GET /v1/tenants/{tenant}/intents/{id}); NotFound if there is none
        (or the tenant is not the caller's)."""
        _, data = self._request("GET", _intent_path(tenant, intent_id))
        return IntentView.from_json(json_object(data))

    def execute(self, tenant: str, intent_id: str) -> Outcome:
        """Pass the gate and execute (POST .../intents/{id}/execute).

        Only the proposer may execute. At most once per idempotency key: a
        repeat returns the first execution's result with ``duplicate``
        True. An execution the executor reported as failed is returned, not
        raised (``outcome.result.status == "failed"``).

        Raises:
            Blocked: the gate decided DENY (``reasons``, ``decision``).
            Forbidden: not the proposer (reason ``not_proposer``).
            InDoubt: an earlier execution started and never finished.
            NotFound, Unauthenticated, StoreUnavailable: as usual.
        """
        _, data = self._request("POST", _intent_path(tenant, intent_id) + "/execute")
        return Outcome.from_json(json_object(data))

    # -- approvals ---------------------------------------------------------

    def approvals(self, tenant: str, status: Optional[str] = "pending") -> List[ApprovalItem]:
        """The approval queue, oldest first, each with its intent and the
        lineage of its votes (GET /v1/tenants/{tenant}/approvals).
        ``status``: pending (default), approved, denied, expired, executed,
        or None for all. Operators and admins only (agents: Forbidden)."""
        query: Dict[str, str] = {}
        if status:
            if status not in _APPROVAL_STATUSES:
                raise ValueError("status %r: must be one of %s, or None" % (status, ", ".join(_APPROVAL_STATUSES)))
            query["status"] = status
        out: List[ApprovalItem] = []
        cursor = ""
        while True:  # every page: the server sends a bounded page and a "next" cursor until the last
            if cursor:
                query["cursor"] = cursor
            _, data = self._request("GET", _tenant_path(tenant) + "/approvals", query=query)
            body = json_object(data)
            out.extend(ApprovalItem.from_json(x) for x in json_objects(body.get("approvals")))
            nxt = body.get("next") or ""
            if not isinstance(nxt, str):
                raise ValueError("approvals: next is not a string cursor")
            if not nxt:
                return out
            if nxt == cursor:
                raise ValueError("approvals: the server returned the cursor it was given")
            cursor = nxt

    def decide_approval(self, tenant: str, intent_id: str, decision: str, reason: str) -> ApprovalRecord:
        """Vote ``"approve"`` or ``"deny"`` on an intent's approval
        (POST .../intents/{id}/approvals) and return the record after the
        vote. Operators and admins whose grants cover the action; never the
        proposer's owner (SelfApproval); one vote per person (Conflict)."""
        if decision not in ("approve", "deny"):
            raise ValueError("decision %r: must be 'approve' or 'deny'" % (decision,))
        if not reason:
            raise ValueError("a reason is required")
        _, data = self._request("POST", _intent_path(tenant, intent_id) + "/approvals", body={"decision": decision, "reason": reason})
        return ApprovalRecord.from_json(json_object(data))

    def approve(self, tenant: str, intent_id: str, reason: str) -> ApprovalRecord:
        """Approve an intent (see :meth:`decide_approval`); the returned
        record's status is ``approved`` once enough distinct people did."""
        return self.decide_approval(tenant, intent_id, "approve", reason)

    def deny(self, tenant: str, intent_id: str, reason: str) -> ApprovalRecord:
        """Deny an intent (final; see :meth:`decide_approval`)."""
        return self.decide_approval(tenant, intent_id, "deny", reason)

    def approval(self, tenant: str, intent_id: str) -> Optional[ApprovalRecord]:
        """The intent's approval as the tenant's audit chain last recorded
        it, or None if it has none (an intent that needs no approval).

        Read from the intent's audit records (GET .../audit?intent=: the
        proposing agent reads its own intent's, operators, admins and
        auditors any) rather than the approval queue (operators only). The
        server reads the chain once a call and returns only the intent's
        records."""
        self.get_intent(tenant, intent_id)  # NotFound for an intent that is not there (or not the caller's)
        _, latest = self._scan_approval(tenant, intent_id, 0, None)
        return latest

    def wait_for_approval(self, tenant: str, intent_id: str, timeout: float = 300.0, poll: float = 1.0) -> ApprovalRecord:
        """Wait until the intent's approval is complete, denied or expired.

        Polls the tenant's audit chain every ``poll`` seconds for the
        intent's approval records (as :meth:`approval`; each poll reads only
        the records written since the last). Expiry is judged as the server
        does (:meth:`ApprovalRecord.status_at`), by this machine's clock.

        Returns:
            the record once it is ``approved`` (or ``executed``: approved
            and already used by the execution).

        Raises:
            ApprovalDenied: an operator denied it (``.approval``).
            ApprovalExpired: it expired first (``.approval``).
            ApprovalTimeout: still pending after ``timeout`` seconds.
            ApprovalNotRequired: the intent asked for no approval.
            NotFound: no such intent (or not the caller's tenant, or, to
                an agent, another principal's intent).
        """
        if timeout < 0 or poll <= 0:
            raise ValueError("timeout must be >= 0 and poll > 0")
        deadline = time.monotonic() + timeout
        view = self.get_intent(tenant, intent_id)
        cursor = 0
        latest: Optional[ApprovalRecord] = None
        while True:
            cursor, latest = self._scan_approval(tenant, intent_id, cursor, latest)
            if latest is None and not view.approval_required:
                raise ApprovalNotRequired("intent %s asked for no approval (its preview's approval check passed)" % intent_id)
            if latest is not None:
                status = latest.status_at()
                if status in ("approved", "executed"):
                    return latest
                if status == "denied":
                    who = latest.denial
                    raise ApprovalDenied(
                        "intent %s was denied%s" % (intent_id, " by %s: %s" % (who.principal, who.reason) if who else ""), latest
                    )
                if status == "expired":
                    raise ApprovalExpired("the approval of intent %s expired at %s" % (intent_id, latest.expires_at), latest)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                have = "%d of %d approvals" % (len(latest.approvals), latest.required) if latest else "no approval record seen"
                raise ApprovalTimeout("intent %s still awaits approval after %gs (%s)" % (intent_id, timeout, have), latest)
            time.sleep(min(poll, remaining))

    def _scan_approval(
        self, tenant: str, intent_id: str, cursor: int, latest: Optional[ApprovalRecord]
    ) -> Tuple[int, Optional[ApprovalRecord]]:
        """Read the intent's records after cursor; return the new cursor and
        the intent's last approval record seen."""
        while True:
            page = self.audit(tenant, after=cursor, limit=_PAGE, intent=intent_id)
            for rec in page.records:
                found = _approval_in(rec, intent_id)
                if found is not None:
                    latest = found
            cursor = max(cursor, page.next_after)
            if len(page.records) < _PAGE:
                return cursor, latest

    # -- kill switches -----------------------------------------------------

    def killswitch(self, tenant: Optional[str] = None) -> KillSwitchState:
        """The global kill switch (``tenant`` None; admins granted
        ``system``) or a tenant's (its operators and admins), as the serving
        node reads it. An engaged switch blocks every execution it covers."""
        path = "/v1/killswitch" if tenant is None else _tenant_path(tenant) + "/killswitch"
        _, data = self._request("GET", path)
        return KillSwitchState.from_json(json_object(json_object(data).get("state")))

    # -- audit -------------------------------------------------------------

    def audit(self, tenant: str, after: int = 0, limit: int = 0, intent: Optional[str] = None) -> AuditPage:
        """Up to ``limit`` audit records (0: the server's default of 100; at
        most 1000) with sequence numbers above ``after``
        (GET /v1/tenants/{tenant}/audit): of the whole chain for operators,
        admins and auditors; for an agent, those of its own intents among
        them (``AuditPage.scope``). With ``intent``, only that intent's
        records (an agent's only while the intent is its own)."""
        if after < 0 or limit < 0:
            raise ValueError("after and limit must not be negative")
        query: Dict[str, str] = {}
        if intent:
            query["intent"] = intent
        if after:
            query["after"] = str(after)
        if limit:
            query["limit"] = str(limit)
        _, data = self._request("GET", _tenant_path(tenant) + "/audit", query=query)
        return AuditPage.from_json(json_object(data))

    def audit_verify(self, tenant: str) -> ReplayReport:
        """Have the server verify the tenant's chain and re-decide every
        recorded decision (GET /v1/tenants/{tenant}/audit/verify);
        ``report.passed`` when all match. The tenant's whole audit: for
        operators, admins and auditors (an agent: Forbidden)."""
        _, data = self._request("GET", _tenant_path(tenant) + "/audit/verify")
        return ReplayReport.from_json(json_object(data))
