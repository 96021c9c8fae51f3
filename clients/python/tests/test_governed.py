"""The governed decorator against a real ``exoarmur serve`` (see harness.py)."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import unittest
from typing import Dict, List, Optional

from exoarmur import (
    ApprovalDenied,
    ApprovalItem,
    ApprovalTimeout,
    Blocked,
    Client,
    ExecutionFailed,
    governed,
)

from harness import ACME, Server, module_fixtures

SERVER: Server


setUpModule, tearDownModule = module_fixtures(globals())


class Operator(threading.Thread):
    """An operator in another thread: waits for the pending approval of an
    intent on ``target`` to appear in the queue, then votes on it."""

    def __init__(self, op: Client, target: str, decision: str = "approve") -> None:
        super().__init__(daemon=True)
        self.op, self.target, self.decision = op, target, decision
        self.item: Optional[ApprovalItem] = None
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 15
            while self.item is None:
                found = [i for i in self.op.approvals(ACME) if i.intent.target == self.target]
                if found:
                    self.item = found[0]
                elif time.monotonic() > deadline:
                    raise AssertionError("no pending approval for %s appeared" % self.target)
                else:
                    time.sleep(0.05)
            self.op.decide_approval(ACME, self.item.intent.id, self.decision, "the operator thread decided")
        except BaseException as e:  # reported by the test
            self.error = e

    def finish(self, test: unittest.TestCase) -> ApprovalItem:
        """Join; fail the test if the thread failed."""
        self.join(20)
        test.assertFalse(self.is_alive(), "the operator thread hung")
        test.assertIsNone(self.error)
        assert self.item is not None
        return self.item


class GovernedTests(unittest.TestCase):
    def setUp(self) -> None:
        self.agent = SERVER.client("agent")
        self.body_ran: List[str] = []

    def test_read_returns_the_executor_output_and_never_runs_the_body(self) -> None:
        with open(SERVER.sandbox_file(ACME, "g-read.txt"), "w") as f:
            f.write("governed content")

        @governed(self.agent, ACME, "fs.read", target=lambda path: path)
        def read(path: str) -> Dict[str, str]:
            """Read a sandbox file."""
            self.body_ran.append(path)
            return {"content": "from the local body"}

        out = read("g-read.txt")
        self.assertEqual(out["content"], "governed content")
        self.assertEqual(out["sha256"], hashlib.sha256(b"governed content").hexdigest())
        self.assertEqual(self.body_ran, [])
        self.assertEqual(read.__name__, "read")
        self.assertEqual(read.__doc__, "Read a sandbox file.")

    def test_write_waits_for_approval_then_executes(self) -> None:
        target = "g-notes/approved.txt"

        @governed(self.agent, ACME, "fs.write", target=lambda path, content, mode="plain": path,
                  justification=lambda path, content, mode="plain": "note " + path, poll=0.1, approval_timeout=20)
        def write_note(path: str, content: str, mode: str = "plain") -> Dict[str, str]:
            """Write a note (A1: an operator approves)."""
            self.body_ran.append(path)
            return {}

        op = Operator(SERVER.client("op1"), target)
        op.start()
        out = write_note(target, content="approved by a person")
        item = op.finish(self)
        self.assertEqual(out["bytes"], str(len("approved by a person")))
        self.assertEqual(out["sha256"], hashlib.sha256(b"approved by a person").hexdigest())
        with open(SERVER.sandbox_file(ACME, target)) as f:
            self.assertEqual(f.read(), "approved by a person")
        # Every argument, defaults included, became a param.
        self.assertEqual(item.intent.params, {"path": target, "content": "approved by a person", "mode": "plain"})
        self.assertEqual(item.intent.justification, "note " + target)
        self.assertEqual(self.agent.get_intent(ACME, item.intent.id).state, "succeeded")
        self.assertEqual(self.body_ran, [])

    def test_without_wait_an_unapproved_write_is_blocked(self) -> None:
        @governed(self.agent, ACME, "fs.write", target="g-blocked.txt", wait=False)
        def write(content: str) -> Dict[str, str]:
            ...

        with self.assertRaises(Blocked) as cm:
            write("not yet")
        self.assertEqual((cm.exception.status, cm.exception.code), (403, "blocked"))
        self.assertEqual(cm.exception.reasons, ["approval_required"])
        self.assertFalse(os.path.exists(SERVER.sandbox_file(ACME, "g-blocked.txt")))

    def test_a_denial_raises(self) -> None:
        @governed(self.agent, ACME, "fs.write", target="g-denied.txt", poll=0.1, approval_timeout=20)
        def write(content: str) -> Dict[str, str]:
            ...

        op = Operator(SERVER.client("op2"), "g-denied.txt", decision="deny")
        op.start()
        with self.assertRaises(ApprovalDenied) as cm:
            write("refused")
        item = op.finish(self)
        self.assertEqual(cm.exception.approval.intent_id, item.intent.id)
        assert cm.exception.approval.denial is not None
        self.assertEqual(cm.exception.approval.denial.reason, "the operator thread decided")
        self.assertFalse(os.path.exists(SERVER.sandbox_file(ACME, "g-denied.txt")))
        with self.assertRaises(Blocked) as blocked:  # the gate agrees
            self.agent.execute(ACME, item.intent.id)
        self.assertEqual(blocked.exception.reasons, ["approval_denied"])

    def test_the_wait_times_out(self) -> None:
        @governed(self.agent, ACME, "fs.write", target="g-unseen.txt", poll=0.1, approval_timeout=0.4)
        def write(content: str) -> Dict[str, str]:
            ...

        with self.assertRaises(ApprovalTimeout):
            write("nobody approves")
        self.assertFalse(os.path.exists(SERVER.sandbox_file(ACME, "g-unseen.txt")))

    def test_a_failed_execution_raises(self) -> None:
        @governed(self.agent, ACME, "fs.read", target=lambda path: path)
        def read(path: str) -> Dict[str, str]:
            ...

        with self.assertRaises(ExecutionFailed) as cm:
            read("g-missing.txt")
        res = cm.exception.outcome.result
        self.assertEqual(res.status, "failed")
        self.assertIn("no such file", res.error)
        self.assertTrue(cm.exception.outcome.decision.allowed)

    def test_idempotency_key_makes_a_repeat_the_same_action(self) -> None:
        path = SERVER.sandbox_file(ACME, "g-once.txt")
        with open(path, "w") as f:
            f.write("first")

        @governed(self.agent, ACME, "fs.read", target=lambda name: name, idempotency_key=lambda *a, **k: "g-once-" + a[0].replace(".", "-"))
        def read(name: str) -> Dict[str, str]:
            ...

        self.assertEqual(read("g-once.txt")["content"], "first")
        with open(path, "w") as f:
            f.write("second")
        # The same key: the first execution's result, the file not re-read.
        self.assertEqual(read("g-once.txt")["content"], "first")
        again = self.agent.propose(ACME, "fs.read", "g-once.txt", params={"name": "g-once.txt"}, idempotency_key="g-once-g-once-txt")
        self.assertFalse(again.created)
        self.assertEqual(again.state, "succeeded")
        kinds = [r.kind for r in self.agent.audit(ACME, limit=1000, intent=again.id).records]
        self.assertEqual(kinds.count("execution.started"), 1)
        self.assertEqual(kinds.count("execution.duplicate"), 1)

    def test_arguments_become_string_params(self) -> None:
        @governed(self.agent, ACME, "fs.read", target="g-params.txt")
        def read(count: int, verbose: bool, ratio: float, note: Optional[str] = None) -> Dict[str, str]:
            ...

        with self.assertRaises(ExecutionFailed) as cm:  # g-params.txt does not exist
            read(3, True, 0.5)
        view = self.agent.get_intent(ACME, cm.exception.outcome.result.intent_id)
        self.assertEqual(view.intent.params, {"count": "3", "verbose": "true", "ratio": "0.5"}, "None is left out")

        auditor = SERVER.client("auditor")  # the tenant's whole audit is not the agent's
        head = auditor.audit_verify(ACME).tenants[0].head_seq
        with self.assertRaises(TypeError):
            read([1, 2], False, 1.0)  # type: ignore[arg-type]
        self.assertEqual(auditor.audit_verify(ACME).tenants[0].head_seq, head, "nothing was proposed")


if __name__ == "__main__":
    unittest.main()
