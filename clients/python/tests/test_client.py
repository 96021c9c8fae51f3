"""The Client against a real ``exoarmur serve`` (see harness.py)."""

from __future__ import annotations

import os
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional
from unittest import mock

import exoarmur
from exoarmur import (
    ApprovalDenied,
    ApprovalExpired,
    ApprovalNotRequired,
    ApprovalTimeout,
    Blocked,
    Client,
    Conflict,
    ExoArmurError,
    Forbidden,
    InvalidRequest,
    InvalidTenant,
    NotFound,
    SelfApproval,
    Unauthenticated,
    UnknownAction,
    Unreachable,
)

import exoarmur.client
from harness import ACME, BETA, LONG, QUICK, QUICK_TTL_SECONDS, Server, free_port, module_fixtures

SERVER: Server


setUpModule, tearDownModule = module_fixtures(globals())


def _write(agent: Client, target: str, content: str, key: Optional[str] = None) -> exoarmur.IntentView:
    view = agent.propose(ACME, "fs.write", target, params={"content": content}, idempotency_key=key, justification="test")
    assert view.created, view
    return view


class ReadTests(unittest.TestCase):
    """A0: fs.read needs no approval; the gate allows it at once."""

    def test_read_existing_file(self) -> None:
        with open(SERVER.sandbox_file(ACME, "hello.txt"), "w") as f:
            f.write("hello from the sandbox")
        agent = SERVER.client("agent")
        view = agent.propose(ACME, "fs.read", "hello.txt")
        self.assertTrue(view.created)
        self.assertEqual(view.state, "proposed")
        self.assertEqual(view.intent.action_class, "A0")
        self.assertTrue(view.intent.idempotency_key.startswith("py-"))
        assert view.preview is not None
        self.assertTrue(view.preview.allowed, view.preview)
        self.assertFalse(view.approval_required)
        out = agent.execute(ACME, view.id)
        self.assertTrue(out.decision.allowed)
        self.assertFalse(out.duplicate)
        self.assertEqual(out.result.status, "succeeded")
        self.assertEqual(out.result.output["content"], "hello from the sandbox")
        self.assertEqual(out.result.output["bytes"], str(len("hello from the sandbox")))
        self.assertEqual(agent.get_intent(ACME, view.id).state, "succeeded")

    def test_read_missing_file_is_a_failed_execution(self) -> None:
        # The gate allows the read; the executor then fails. That is an
        # execution result (HTTP 200), not a refusal, and it is final: a
        # repeat returns the first result without reading again.
        agent = SERVER.client("agent")
        view = agent.propose(ACME, "fs.read", "no/such/file.txt")
        out = agent.execute(ACME, view.id)
        self.assertTrue(out.decision.allowed)
        self.assertEqual(out.result.status, "failed")
        self.assertIn("no such file", out.result.error)
        self.assertEqual(out.result.output, {})
        again = agent.execute(ACME, view.id)
        self.assertTrue(again.duplicate)
        self.assertEqual(again.result.started_at, out.result.started_at)
        got = agent.get_intent(ACME, view.id)
        self.assertEqual(got.state, "failed")
        self.assertIsNone(got.created)
        with self.assertRaises(ApprovalNotRequired):
            agent.wait_for_approval(ACME, view.id, timeout=1, poll=0.1)
        self.assertIsNone(agent.approval(ACME, view.id))


class ApprovalTests(unittest.TestCase):
    """A1: fs.write needs one operator's approval."""

    def test_write_blocked_until_approved(self) -> None:
        agent, op = SERVER.client("agent"), SERVER.client("op1")
        view = _write(agent, "approved.txt", "four eyes")
        self.assertEqual(view.intent.action_class, "A1")
        self.assertTrue(view.approval_required)
        with self.assertRaises(Blocked) as cm:
            agent.execute(ACME, view.id)
        err = cm.exception
        self.assertEqual((err.status, err.code), (403, "blocked"))
        self.assertEqual(err.reasons, ["approval_required"])
        self.assertTrue(err.request_id.startswith("req_"), err.request_id)
        assert err.decision is not None
        self.assertEqual(err.decision.verdict, "DENY")
        check = err.decision.check("approval")
        assert check is not None
        self.assertEqual((check.outcome, check.reason), ("fail", "approval_required"))
        self.assertIn("approval_required", str(err))
        self.assertFalse(os.path.exists(SERVER.sandbox_file(ACME, "approved.txt")))

        pending = [i for i in op.approvals(ACME) if i.intent.id == view.id]
        self.assertEqual(len(pending), 1)
        self.assertEqual(pending[0].approval.status, "pending")
        self.assertEqual(pending[0].intent.params, {"content": "four eyes"})
        seen = agent.approval(ACME, view.id)
        assert seen is not None
        self.assertEqual((seen.status, seen.required), ("pending", 1))

        rec = op.approve(ACME, view.id, "reviewed")
        self.assertEqual(rec.status, "approved")
        self.assertEqual([v.reason for v in rec.approvals], ["reviewed"])
        self.assertEqual(rec.intent_hash, view.intent.hash)
        self.assertNotIn(view.id, [i.intent.id for i in op.approvals(ACME)])
        self.assertIn(view.id, [i.intent.id for i in op.approvals(ACME, status="approved")])

        out = agent.execute(ACME, view.id)
        self.assertEqual(out.result.status, "succeeded")
        self.assertEqual(out.result.output["bytes"], "9")
        with open(SERVER.sandbox_file(ACME, "approved.txt")) as f:
            self.assertEqual(f.read(), "four eyes")
        used = agent.approval(ACME, view.id)
        assert used is not None
        self.assertEqual(used.status, "executed")

    def test_deny(self) -> None:
        agent, op = SERVER.client("agent"), SERVER.client("op2")
        view = _write(agent, "denied.txt", "never")
        rec = op.deny(ACME, view.id, "not today")
        self.assertEqual(rec.status, "denied")
        assert rec.denial is not None
        self.assertEqual(rec.denial.reason, "not today")
        with self.assertRaises(Blocked) as cm:
            agent.execute(ACME, view.id)
        self.assertEqual(cm.exception.reasons, ["approval_denied"])
        with self.assertRaises(ApprovalDenied) as wait:
            agent.wait_for_approval(ACME, view.id, timeout=5, poll=0.1)
        self.assertEqual(wait.exception.approval.status, "denied")
        self.assertIn("not today", str(wait.exception))
        # A denial is final: the other operator cannot approve afterwards.
        with self.assertRaises(Conflict):
            SERVER.client("op1").approve(ACME, view.id, "too late")
        self.assertFalse(os.path.exists(SERVER.sandbox_file(ACME, "denied.txt")))

    def test_wait_for_approval_while_another_thread_approves(self) -> None:
        agent, op = SERVER.client("agent"), SERVER.client("op1")
        view = _write(agent, "waited.txt", "worth the wait")
        approved_at: List[float] = []
        failure: List[BaseException] = []

        def approve_later() -> None:
            try:
                time.sleep(0.7)
                approved_at.append(time.monotonic())
                op.approve(ACME, view.id, "approved from another thread")
            except BaseException as e:  # reported by the main thread
                failure.append(e)

        t = threading.Thread(target=approve_later)
        start = time.monotonic()
        t.start()
        try:
            rec = agent.wait_for_approval(ACME, view.id, timeout=15, poll=0.1)
        finally:
            t.join(15)
        returned = time.monotonic()
        self.assertEqual(failure, [])
        self.assertEqual(rec.status, "approved")
        self.assertEqual(rec.approvals[0].reason, "approved from another thread")
        self.assertGreaterEqual(returned, approved_at[0])
        self.assertGreaterEqual(returned - start, 0.7)
        self.assertEqual(agent.execute(ACME, view.id).result.status, "succeeded")

    def test_wait_times_out_while_pending(self) -> None:
        agent = SERVER.client("agent")
        view = _write(agent, "pending.txt", "nobody looks")
        start = time.monotonic()
        with self.assertRaises(ApprovalTimeout) as cm:
            agent.wait_for_approval(ACME, view.id, timeout=0.5, poll=0.1)
        self.assertGreaterEqual(time.monotonic() - start, 0.5)
        rec = cm.exception.approval
        assert rec is not None
        self.assertEqual(rec.status, "pending")
        self.assertIn("0 of 1 approvals", str(cm.exception))

    def test_approval_expires(self) -> None:
        # QUICK's approvals live QUICK_TTL_SECONDS.
        agent = SERVER.client("agent")
        view = agent.propose(QUICK, "fs.write", "late.txt", params={"content": "x"})
        start = time.monotonic()
        with self.assertRaises(ApprovalExpired) as cm:
            agent.wait_for_approval(QUICK, view.id, timeout=QUICK_TTL_SECONDS + 8, poll=0.2)
        self.assertGreaterEqual(time.monotonic() - start, QUICK_TTL_SECONDS - 1)
        self.assertEqual(cm.exception.approval.intent_id, view.id)
        with self.assertRaises(Conflict):
            SERVER.client("op1").approve(QUICK, view.id, "too late")
        with self.assertRaises(Blocked) as blocked:
            agent.execute(QUICK, view.id)
        self.assertIn("approval_expired", blocked.exception.reasons)

    def test_self_approval(self) -> None:
        admin = SERVER.client("admin")
        view = _write(admin, "self.txt", "mine")
        with self.assertRaises(SelfApproval) as cm:
            admin.approve(ACME, view.id, "I trust myself")
        self.assertEqual((cm.exception.status, cm.exception.code), (403, "self_approval"))
        self.assertIsInstance(cm.exception, Forbidden)

    def test_one_vote_per_person_and_none_for_reads(self) -> None:
        agent, op = SERVER.client("agent"), SERVER.client("op1")
        view = _write(agent, "twice.txt", "x")
        op.approve(ACME, view.id, "once")
        with self.assertRaises(Conflict) as cm:
            op.approve(ACME, view.id, "twice")
        self.assertEqual(cm.exception.status, 409)
        read = agent.propose(ACME, "fs.read", "twice.txt")
        with self.assertRaises(Conflict) as cm:
            op.approve(ACME, read.id, "not needed")
        self.assertIn("needs no approval", cm.exception.message)


class RefusalTests(unittest.TestCase):
    """Errors decode to the class of their code."""

    def test_foreign_tenant_is_not_found(self) -> None:
        agent = SERVER.client("agent")
        view = agent.propose(ACME, "fs.read", "hello.txt")
        with self.assertRaises(NotFound) as cm:
            SERVER.client("outsider").get_intent(ACME, view.id)
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "not_found"))
        with self.assertRaises(NotFound):
            agent.get_intent(BETA, view.id)
        with self.assertRaises(NotFound):
            agent.execute(BETA, view.id)
        with self.assertRaises(NotFound):
            agent.get_intent(ACME, "in_doesnotexist")

    def test_bad_key_is_unauthenticated(self) -> None:
        for key in ("exo_not_a_key", ""):
            with self.assertRaises(Unauthenticated) as cm:
                Client(SERVER.url, key).get_intent(ACME, "in_x")
            err = cm.exception
            self.assertEqual((err.status, err.code), (401, "unauthenticated"))
            self.assertTrue(err.request_id, "a refusal carries the request ID")

    def test_connection_refused_names_the_server(self) -> None:
        url = "http://127.0.0.1:%d" % free_port()
        with self.assertRaises(Unreachable) as cm:
            Client(url, "exo_x", timeout=5).get_intent(ACME, "in_x")
        msg = str(cm.exception)
        self.assertIn(url, msg)
        self.assertIn("EXOARMUR_SERVER", msg)
        self.assertIn("connection refused", msg)
        self.assertEqual(cm.exception.status, 0)

    def test_idempotency_key_conflict_and_repeat(self) -> None:
        agent = SERVER.client("agent")
        first = _write(agent, "idem.txt", "one", key="py-idem-1")
        again = agent.propose(ACME, "fs.write", "idem.txt", params={"content": "one"}, idempotency_key="py-idem-1", justification="test")
        self.assertFalse(again.created)
        self.assertEqual(again.id, first.id)
        with self.assertRaises(Conflict) as cm:
            agent.propose(ACME, "fs.write", "idem.txt", params={"content": "two"}, idempotency_key="py-idem-1")
        self.assertEqual((cm.exception.status, cm.exception.code), (409, "conflict"))

    def test_invalid_requests(self) -> None:
        agent = SERVER.client("agent")
        with self.assertRaises(InvalidRequest) as cm:
            agent.propose(ACME, "fs.read", "x.txt", idempotency_key="spaces are not allowed")
        self.assertEqual((cm.exception.status, cm.exception.code), (400, "invalid_request"))
        self.assertIn("idempotency_key", cm.exception.message)
        with self.assertRaises(UnknownAction) as ua:
            agent.propose(ACME, "fs.nuke", "x.txt")
        self.assertEqual(ua.exception.code, "unknown_action")
        self.assertIsInstance(ua.exception, InvalidRequest)
        with self.assertRaises(ValueError):  # checked before any request
            agent.get_intent("ACME", "in_x")
        with self.assertRaises(TypeError):
            agent.propose(ACME, "fs.write", "x.txt", params={"content": 1})  # type: ignore[dict-item]

    def test_forbidden(self) -> None:
        agent, op = SERVER.client("agent"), SERVER.client("op1")
        with self.assertRaises(Forbidden) as cm:
            agent.approvals(ACME)
        self.assertEqual((cm.exception.status, cm.exception.code), (403, "forbidden"))
        view = agent.propose(ACME, "fs.read", "hello.txt")
        with self.assertRaises(Forbidden) as cm:
            op.execute(ACME, view.id)
        self.assertEqual(cm.exception.reasons, ["not_proposer"])
        with self.assertRaises(Forbidden):
            agent.killswitch()


class ServerStateTests(unittest.TestCase):
    def test_killswitch_read(self) -> None:
        admin = SERVER.client("admin")
        glob = admin.killswitch()
        self.assertEqual(glob.scope, "global")
        self.assertFalse(glob.engaged)
        self.assertGreaterEqual(glob.revision, 1)
        self.assertEqual(glob.reason, "python client tests")
        acme = SERVER.client("op1").killswitch(ACME)
        self.assertEqual((acme.scope, acme.engaged), (ACME, False))
        quick = admin.killswitch(QUICK)
        self.assertEqual((quick.engaged, quick.revision), (True, 0), "never set: engaged")

    def test_audit_verify(self) -> None:
        with open(SERVER.sandbox_file(ACME, "verify.txt"), "w") as f:
            f.write("verified")
        agent = SERVER.client("agent")
        view = agent.propose(ACME, "fs.read", "verify.txt")
        agent.execute(ACME, view.id)
        auditor = SERVER.client("auditor")
        rep = auditor.audit_verify(ACME)
        self.assertTrue(rep.passed, rep.mismatches)
        self.assertEqual(rep.mismatches, [])
        self.assertGreater(rep.records, 0)
        self.assertEqual(rep.decisions, rep.decisions_matched)
        self.assertEqual([(t.tenant, t.chain_ok) for t in rep.tenants], [(ACME, True)])
        page = auditor.audit(ACME, after=max(rep.tenants[0].head_seq - 1000, 0), limit=1000)
        self.assertEqual(page.scope, "tenant")
        self.assertEqual(page.records[-1].seq, rep.tenants[0].head_seq)
        self.assertIn(view.id, [r.correlation_id for r in page.records if r.kind == "execution.succeeded"])
        # The tenant's whole audit is not an agent's: it reads its own intents' records.
        with self.assertRaises(Forbidden):
            agent.audit_verify(ACME)
        mine = agent.audit(ACME, limit=10, intent=view.id)
        self.assertEqual((mine.scope, mine.intent), ("own", view.id))
        self.assertEqual([r.kind for r in mine.records][-1], "execution.succeeded")
        self.assertTrue(all(r.correlation_id == view.id for r in mine.records))

    def test_an_auditor_reads_and_never_acts(self) -> None:
        agent, auditor = SERVER.client("agent"), SERVER.client("auditor")
        view = agent.propose(ACME, "fs.write", "audited.txt", params={"content": "x"})
        self.assertEqual(auditor.get_intent(ACME, view.id).id, view.id)
        self.assertIsNotNone(auditor.approval(ACME, view.id))
        with self.assertRaises(Forbidden):
            auditor.propose(ACME, "fs.read", "audited.txt")
        with self.assertRaises(Forbidden):
            auditor.approve(ACME, view.id, "an auditor may not")

    def test_environment_configures_the_client(self) -> None:
        with mock.patch.dict(os.environ, {"EXOARMUR_SERVER": SERVER.url + "/", "EXOARMUR_API_KEY": SERVER.keys["admin"]}):
            c = Client()
        self.assertEqual(c.base_url, SERVER.url)
        self.assertFalse(c.killswitch().engaged)  # the admin's key was sent
        with mock.patch.dict(os.environ, {"EXOARMUR_SERVER": SERVER.url, "EXOARMUR_API_KEY": SERVER.keys["admin"]}):
            with self.assertRaises(Unauthenticated):
                Client(api_key="").killswitch()  # an explicit "" sends no key
        with self.assertRaises(ValueError):
            Client("ftp://127.0.0.1:1")
        with self.assertRaises(ValueError):
            Client("http://user:pw@127.0.0.1:1")

    def test_error_classes_cover_every_code(self) -> None:
        # The codes of internal/contract/errors.go (the OpenAPI enum).
        codes = ["invalid_request", "invalid_tenant", "unknown_action", "unauthenticated", "rate_limited", "quota_exceeded",
                 "forbidden", "blocked", "self_approval", "not_found", "method_not_allowed", "conflict", "in_doubt", "body_too_large",
                 "request_timeout", "store_unavailable", "internal"]
        classes = {exoarmur.error_class(c) for c in codes}
        self.assertEqual(len(classes), len(codes))
        self.assertNotIn(ExoArmurError, classes)
        self.assertIs(exoarmur.error_class("some_future_code"), ExoArmurError)
        self.assertIs(exoarmur.error_class("invalid_tenant"), InvalidTenant)

    def test_invalid_tenant_from_the_server(self) -> None:
        # The client validates tenants itself; a raw request shows the
        # server's answer decodes to InvalidTenant.
        c = SERVER.client("agent")
        with self.assertRaises(InvalidTenant) as cm:
            c._request("GET", "/v1/tenants/NOT-VALID/intents/in_x")
        self.assertEqual(cm.exception.status, 400)


class AuditSeekTests(unittest.TestCase):
    """approval() and wait_for_approval() read only the intent's records
    (GET .../audit?intent=), however long the chain before them, and an
    agent's pages of the chain hold only its own intents' records."""

    def test_approval_found_behind_a_long_chain(self) -> None:
        agent, op = SERVER.client("agent"), SERVER.client("op1")

        def refused(_: int) -> None:
            with self.assertRaises(Forbidden):  # each refusal is an audit record
                agent.approvals(LONG)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(refused, range(2500)))
        view = agent.propose(LONG, "fs.write", "deep.txt", params={"content": "found"})
        # The operator reads the whole chain; the agent's pages of it, by
        # windows of 1000, hold only its intent's records.
        records, after = [], 0
        while True:
            page = op.audit(LONG, after=after, limit=1000)
            records += page.records
            if len(page.records) < 1000:
                break
            after = page.next_after
        self.assertGreaterEqual(len(records), 2502)
        requested = [r.seq for r in records if r.kind == "approval.requested" and r.correlation_id == view.id]
        self.assertEqual(len(requested), 1)
        own, after = [], 0
        while True:
            page = agent.audit(LONG, after=after, limit=1000)
            self.assertEqual(page.scope, "own")
            own += page.records
            if page.next_after - after < 1000:
                break
            after = page.next_after
        self.assertEqual({r.correlation_id for r in own}, {view.id})
        self.assertIn(requested[0], [r.seq for r in own])

        with mock.patch.object(agent, "audit", wraps=agent.audit) as audit:
            seen = agent.approval(LONG, view.id)
        self.assertEqual(audit.call_count, 1, "one page of the intent's records, not a scan")
        assert seen is not None
        self.assertEqual(seen.status, "pending")
        op.approve(LONG, view.id, "found it")
        rec = agent.wait_for_approval(LONG, view.id, timeout=5, poll=0.1)
        self.assertEqual(rec.status, "approved")


if __name__ == "__main__":
    unittest.main()
