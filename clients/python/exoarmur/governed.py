"""The ``governed`` decorator: a Python call that is an ExoArmur action."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Dict, Mapping, Optional, Union

from .client import Client
from .errors import ExecutionFailed

__all__ = ["governed"]

#: Computed from the decorated call's arguments (``*args, **kwargs``).
ArgsFn = Callable[..., str]


def _param_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise TypeError(
        "argument %r: a governed call's arguments become ExoArmur params, which are strings; "
        "got %s (pass a string, or give governed(params=...))" % (name, type(value).__name__)
    )


def governed(
    client: Client,
    tenant: str,
    action: str,
    *,
    target: Union[str, ArgsFn],
    idempotency_key: Optional[ArgsFn] = None,
    params: Optional[Callable[..., Mapping[str, str]]] = None,
    justification: Optional[Union[str, ArgsFn]] = None,
    wait: bool = True,
    approval_timeout: float = 300.0,
    poll: float = 1.0,
) -> Callable[[Callable[..., Any]], Callable[..., Dict[str, str]]]:
    """Make calls of the decorated function ExoArmur actions.

    Calling the decorated function proposes ``action`` in ``tenant``
    through ``client``, waits for an operator's approval if the gate asks
    for one, executes it, and returns the execution result's ``output``
    (a ``dict`` of strings, e.g. fs.read's ``{"content", "bytes",
    "sha256"}``). The effect is performed by ExoArmur's executor on the
    server, after the gate's ALLOW, and audited there. **The decorated
    function's body is never run**: local code run as well would be an
    effect the gate never saw. Its signature declares the action's
    parameters and its docstring documents it; write the body as ``...``.

    Each call, in order:

    1. binds the arguments to the function's signature (defaults applied;
       a call that does not fit raises TypeError, as calling it would);
    2. computes the target: ``target`` itself if a string, else
       ``target(*args, **kwargs)``;
    3. computes the params: ``params(*args, **kwargs)`` if given, else
       every bound argument by its parameter name (``**kwargs`` entries by
       their keys), skipping those that are None; a ``str`` as is, a
       ``bool`` as ``"true"``/``"false"``, an ``int`` or ``float`` as
       ``str(value)``, anything else is a TypeError (nothing is proposed);
    4. proposes with idempotency key ``idempotency_key(*args, **kwargs)``,
       or a fresh random key when none is given (every call is then a new
       intent; give a key function to make a retried call the same intent,
       executed at most once, whose repeat returns the first result);
    5. if the proposal's preview says ``approval_required`` and ``wait``
       is true, waits up to ``approval_timeout`` seconds
       (:meth:`Client.wait_for_approval`, polling every ``poll`` seconds);
    6. executes, and returns ``outcome.result.output``.

    Raises:
        Blocked: the gate decided DENY at execution (its ``reasons``: e.g.
            ``approval_required`` when ``wait`` is false and no approval is
            complete, ``approval_denied``, ``killswitch_global_engaged``).
        ApprovalDenied, ApprovalExpired, ApprovalTimeout: from the wait.
        ExecutionFailed: the gate allowed it and the executor failed (e.g.
            fs.read of a missing file); ``.outcome.result.error`` says why.
        ExoArmurError: any other refusal (Forbidden, Conflict, ...), or
            Unreachable.

    The client's key must be the one that proposes and executes (an agent's,
    or any key granted the action); approvals come from other people.

    Example::

        @governed(agent, "acme", "fs.write", target=lambda path, content: path,
                  idempotency_key=lambda path, content: "note-" + path.replace("/", "-").replace(".", "-"))
        def write_note(path: str, content: str) -> Dict[str, str]:
            \"\"\"Write a note in the tenant's sandbox (A1: an operator approves).\"\"\"
            ...

        write_note("notes/a.txt", content="hello")  # -> {"bytes": "5", "sha256": "..."}
    """
    if approval_timeout < 0 or poll <= 0:
        raise ValueError("approval_timeout must be >= 0 and poll > 0")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Dict[str, str]]:
        sig = inspect.signature(fn)
        if params is None and any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in sig.parameters.values()):
            raise TypeError("governed %s: *args cannot be named as params; give governed(params=...)" % fn.__name__)

        def params_of(args: Any, kwargs: Any) -> Dict[str, str]:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            if params is not None:
                return dict(params(*args, **kwargs))
            out: Dict[str, str] = {}
            for name, value in bound.arguments.items():
                kind = sig.parameters[name].kind
                items = value.items() if kind is inspect.Parameter.VAR_KEYWORD else [(name, value)]
                for k, v in items:
                    if v is not None:
                        out[k] = _param_value(k, v)
            return out

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Dict[str, str]:
            p = params_of(args, kwargs)
            tgt = target if isinstance(target, str) else target(*args, **kwargs)
            key = idempotency_key(*args, **kwargs) if idempotency_key is not None else None
            why = justification if justification is None or isinstance(justification, str) else justification(*args, **kwargs)
            view = client.propose(tenant, action, tgt, params=p, idempotency_key=key, justification=why)
            if wait and view.approval_required:
                client.wait_for_approval(tenant, view.id, timeout=approval_timeout, poll=poll)
            outcome = client.execute(tenant, view.id)
            if not outcome.result.succeeded:
                raise ExecutionFailed(
                    "%s %s (intent %s) %s: %s" % (action, tgt, view.id, outcome.result.status, outcome.result.error or "no error given"),
                    outcome,
                )
            return dict(outcome.result.output)

        return call

    return decorate
