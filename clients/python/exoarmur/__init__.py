"""ExoArmur's Python client: propose, approve, execute and audit governed
actions through the ExoArmur REST API.

Standard library only (Python 3.8 or later). The pieces:

* :class:`Client`, one method per API operation, returning the typed values
  of :mod:`exoarmur.models`;
* the exceptions of :mod:`exoarmur.errors`, one per server error code, all
  :class:`ExoArmurError`;
* :func:`governed`, a decorator that turns a Python call into a proposed,
  approved and executed ExoArmur action.

Quick start (see clients/python/README.md)::

    from exoarmur import Client, Blocked

    agent = Client("http://127.0.0.1:8080", "exo_...")  # or EXOARMUR_SERVER, EXOARMUR_API_KEY
    view = agent.propose("acme", "fs.write", "notes/a.txt", params={"content": "hi"})
    try:
        agent.execute("acme", view.id)
    except Blocked as e:
        print(e.reasons)  # ['approval_required']: an operator approves first
"""

from .client import DEFAULT_SERVER, DEFAULT_TIMEOUT, MAX_RESPONSE, Client, __version__
from .errors import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalNotRequired,
    ApprovalTimeout,
    Blocked,
    BodyTooLarge,
    Conflict,
    ExecutionFailed,
    ExoArmurError,
    Forbidden,
    InDoubt,
    InternalError,
    InvalidRequest,
    InvalidTenant,
    MethodNotAllowed,
    NotFound,
    QuotaExceeded,
    RateLimited,
    RequestTimeout,
    SelfApproval,
    StoreUnavailable,
    TransportError,
    Unauthenticated,
    UnknownAction,
    Unreachable,
    error_class,
)
from .governed import governed
from .models import (
    ALLOW,
    DENY,
    ActionIntent,
    ApprovalItem,
    ApprovalRecord,
    AuditPage,
    AuditRecord,
    Check,
    Decision,
    ExecutionResult,
    IntentView,
    KillSwitchState,
    Lineage,
    Mismatch,
    Outcome,
    ReplayReport,
    TenantReport,
    Vote,
    parse_time,
)

__all__ = [
    "ALLOW",
    "DENY",
    "DEFAULT_SERVER",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE",
    "ActionIntent",
    "ApprovalDenied",
    "ApprovalExpired",
    "ApprovalItem",
    "ApprovalNotRequired",
    "ApprovalRecord",
    "ApprovalTimeout",
    "AuditPage",
    "AuditRecord",
    "Blocked",
    "BodyTooLarge",
    "Check",
    "Client",
    "Conflict",
    "Decision",
    "ExecutionFailed",
    "ExecutionResult",
    "ExoArmurError",
    "Forbidden",
    "InDoubt",
    "IntentView",
    "InternalError",
    "InvalidRequest",
    "InvalidTenant",
    "KillSwitchState",
    "Lineage",
    "MethodNotAllowed",
    "Mismatch",
    "NotFound",
    "Outcome",
    "QuotaExceeded",
    "RateLimited",
    "ReplayReport",
    "RequestTimeout",
    "SelfApproval",
    "StoreUnavailable",
    "TenantReport",
    "TransportError",
    "Unauthenticated",
    "UnknownAction",
    "Unreachable",
    "Vote",
    "__version__",
    "error_class",
    "governed",
    "parse_time",
]
