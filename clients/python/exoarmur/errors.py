"""Exceptions raised by the ExoArmur client.

Every exception of this package is an :class:`ExoArmurError`. A refusal by
the server carries the HTTP ``status`` and the API's error body
``{"error": {"code", "message", "reasons"}, "request_id", "decision"}``;
its class is chosen by ``code``, the machine-readable error code of the V1
contract (``internal/contract/errors.go``):

==================== ====== =====================================
code                 status class
==================== ====== =====================================
invalid_request      400    :class:`InvalidRequest`
invalid_tenant       400    :class:`InvalidTenant` (an InvalidRequest)
unknown_action       400    :class:`UnknownAction` (an InvalidRequest)
body_too_large       413    :class:`BodyTooLarge` (an InvalidRequest)
request_timeout      408    :class:`RequestTimeout` (an InvalidRequest)
unauthenticated      401    :class:`Unauthenticated`
rate_limited         429    :class:`RateLimited`
quota_exceeded       429    :class:`QuotaExceeded`
forbidden            403    :class:`Forbidden`
self_approval        403    :class:`SelfApproval` (a Forbidden)
blocked              403    :class:`Blocked`
not_found            404    :class:`NotFound`
method_not_allowed   405    :class:`MethodNotAllowed`
conflict             409    :class:`Conflict`
in_doubt             409    :class:`InDoubt` (a Conflict)
store_unavailable    503    :class:`StoreUnavailable`
internal             500    :class:`InternalError`
==================== ====== =====================================

A code the client does not know (a newer server) is a plain
:class:`ExoArmurError` with that code; an answer that is not the API's error
shape (a proxy's page) is one with ``code == ""`` and an excerpt of the body
as ``message``. A principal asking for a tenant it is not granted gets
:class:`NotFound`, never :class:`Forbidden` (the server reveals nothing of
tenants the caller may not see).

Errors the client raises itself have ``status == 0`` and ``code == ""``:
:class:`TransportError` and :class:`Unreachable` (no HTTP answer), and
:class:`ApprovalDenied`, :class:`ApprovalExpired`, :class:`ApprovalTimeout`,
:class:`ApprovalNotRequired` and :class:`ExecutionFailed` (what a wait or a
governed call observed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Type

if TYPE_CHECKING:  # pragma: no cover
    from .models import ApprovalRecord, Decision, Outcome

__all__ = [
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalNotRequired",
    "ApprovalTimeout",
    "Blocked",
    "BodyTooLarge",
    "Conflict",
    "ExecutionFailed",
    "ExoArmurError",
    "Forbidden",
    "InDoubt",
    "InternalError",
    "InvalidRequest",
    "InvalidTenant",
    "MethodNotAllowed",
    "NotFound",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "SelfApproval",
    "StoreUnavailable",
    "TransportError",
    "Unauthenticated",
    "UnknownAction",
    "Unreachable",
    "error_class",
]


class ExoArmurError(Exception):
    """Base of every error of this package.

    Attributes:
        status: the HTTP status of the refusal; 0 when the server did not
            answer or the client raised the error itself.
        code: the server's machine-readable error code (e.g. ``"blocked"``);
            ``""`` when the answer was not the API's error body or the
            client raised the error itself.
        message: the server's message, safe to show (or the client's).
        reasons: reason codes (the failing checks of a blocked decision,
            e.g. ``["approval_required"]``, or of some refusals, e.g.
            ``["not_proposer"]``).
        request_id: the request's ID (``X-Request-Id``), to find it in the
            server's log and audit chain; ``""`` if there was none.
        decision: the gate's DENY of a blocked execution, else None.
        method, path: the request that failed (``""`` for client-side errors).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "",
        reasons: Optional[List[str]] = None,
        request_id: str = "",
        decision: Optional["Decision"] = None,
        method: str = "",
        path: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.reasons: List[str] = list(reasons or [])
        self.request_id = request_id
        self.decision = decision
        self.method = method
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        parts: List[str] = []
        if self.method:
            parts.append("%s %s: " % (self.method, self.path))
        if self.status:
            parts.append("HTTP %d" % self.status)
            if self.code:
                parts.append(" " + self.code)
            if self.message:
                parts.append(": ")
        parts.append(self.message)
        if self.reasons:
            parts.append(" (reasons: %s)" % ", ".join(self.reasons))
        if self.request_id:
            parts.append(" [request %s]" % self.request_id)
        return "".join(parts)


class InvalidRequest(ExoArmurError):
    """400 ``invalid_request``: the request does not match the contract
    (a field, a query, the JSON); base of the other client-mistake codes."""


class InvalidTenant(InvalidRequest):
    """400 ``invalid_tenant``: not a valid tenant ID."""


class UnknownAction(InvalidRequest):
    """400 ``unknown_action``: an action type the server does not register."""


class BodyTooLarge(InvalidRequest):
    """413 ``body_too_large``: the request body exceeds 1 MiB."""


class RequestTimeout(InvalidRequest):
    """408 ``request_timeout``: the request body arrived too slowly."""


class Unauthenticated(ExoArmurError):
    """401 ``unauthenticated``: no key, an unknown, revoked or expired key."""


class RateLimited(ExoArmurError):
    """429 ``rate_limited``: too many failed authentications, or proposals,
    executions or approval votes beyond the key's or the tenant's rate on
    this node; retry after the ``Retry-After`` header's seconds."""


class QuotaExceeded(ExoArmurError):
    """429 ``quota_exceeded``: the tenant holds as many pending intents,
    pending approvals or stored bytes as its quota allows (``reasons`` names
    which); nothing was stored. Waiting alone does not help: execute, decide
    or let intents expire first."""


class Forbidden(ExoArmurError):
    """403 ``forbidden``: the caller's role or grants do not allow the
    operation (e.g. an agent listing approvals; anyone but the proposer
    executing, reason ``not_proposer``)."""


class SelfApproval(Forbidden):
    """403 ``self_approval``: the proposer (or another key of its owner)
    approving or denying its own intent."""


class Blocked(ExoArmurError):
    """403 ``blocked``: the gate decided DENY. ``reasons`` are the failing
    checks (``approval_required``, ``approval_denied``, ``approval_expired``,
    ``killswitch_global_engaged``, ``policy_denied``, ...) and ``decision``
    the full decision."""


class NotFound(ExoArmurError):
    """404 ``not_found``: no such intent or route, or a tenant the caller
    is not granted (the server does not tell the two apart)."""


class MethodNotAllowed(ExoArmurError):
    """405 ``method_not_allowed``: the route exists with another method."""


class Conflict(ExoArmurError):
    """409 ``conflict``: the request contradicts the stored state (an
    idempotency key already used by a different intent, a second vote of
    one person, a vote on an intent that needs no approval, ...)."""


class InDoubt(Conflict):
    """409 ``in_doubt``: the execution started and never finished; it is
    never re-run, an operator resolves it."""


class StoreUnavailable(ExoArmurError):
    """503 ``store_unavailable``: the durable store could not be reached or
    written; nothing was acknowledged that was not stored."""


class InternalError(ExoArmurError):
    """500 ``internal``: the server failed; its log has the cause under
    ``request_id``."""


class TransportError(ExoArmurError):
    """The request got no usable HTTP answer (a timeout, a reset, an
    answer too large or not JSON)."""


class Unreachable(TransportError):
    """The server could not be reached at all (connection refused, unknown
    host, no route). The message names the server URL tried."""


class ApprovalDenied(ExoArmurError):
    """An operator denied the intent's approval (final). ``approval`` is
    the record, with ``approval.denial`` saying who and why."""

    def __init__(self, message: str, approval: "ApprovalRecord", **kw: Any) -> None:
        self.approval = approval
        super().__init__(message, **kw)


class ApprovalExpired(ExoArmurError):
    """The intent's approval expired before it was complete (or used)."""

    def __init__(self, message: str, approval: "ApprovalRecord", **kw: Any) -> None:
        self.approval = approval
        super().__init__(message, **kw)


class ApprovalTimeout(ExoArmurError):
    """The wait ended with the approval still pending. ``approval`` is the
    record as last seen (None if none was seen yet)."""

    def __init__(self, message: str, approval: Optional["ApprovalRecord"], **kw: Any) -> None:
        self.approval = approval
        super().__init__(message, **kw)


class ApprovalNotRequired(ExoArmurError):
    """The intent's proposal asked for no approval, so there is none to
    wait for (its preview's approval check passed)."""


class ExecutionFailed(ExoArmurError):
    """The gate allowed the execution and the executor reported a failure
    (``outcome.result.status`` is ``failed`` or ``in_doubt``; the
    executor's error is in ``outcome.result.error``)."""

    def __init__(self, message: str, outcome: "Outcome", **kw: Any) -> None:
        self.outcome = outcome
        super().__init__(message, **kw)


_BY_CODE: Dict[str, Type[ExoArmurError]] = {
    "invalid_request": InvalidRequest,
    "invalid_tenant": InvalidTenant,
    "unknown_action": UnknownAction,
    "body_too_large": BodyTooLarge,
    "request_timeout": RequestTimeout,
    "unauthenticated": Unauthenticated,
    "rate_limited": RateLimited,
    "quota_exceeded": QuotaExceeded,
    "forbidden": Forbidden,
    "self_approval": SelfApproval,
    "blocked": Blocked,
    "not_found": NotFound,
    "method_not_allowed": MethodNotAllowed,
    "conflict": Conflict,
    "in_doubt": InDoubt,
    "store_unavailable": StoreUnavailable,
    "internal": InternalError,
}


def error_class(code: str) -> Type[ExoArmurError]:
    """The exception class of a server error code (ExoArmurError itself
    for a code this client does not know)."""
    return _BY_CODE.get(code, ExoArmurError)
