"""A real ExoArmur server for the client's tests.

The tests build nothing: they run the binary named by ``EXOARMUR_BIN``
(default ``bin/exoarmur`` at the repository root; ``make test-python``
builds it). :class:`Server` creates the keys with ``exoarmur keys create``
on a fresh data dir (before ``serve``: the data dir is locked while it
runs), starts ``exoarmur serve`` on a free loopback port, waits until it is
ready, opens the kill switches with the CLI, and stops the process by its
PID at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from exoarmur import Client, ExoArmurError

REPO_ROOT = Path(__file__).resolve().parents[3]

#: The tenant every test works in; QUICK has a 2 s approval lifetime (the
#: expiry test); LONG gets a long audit chain (the audit seek test); BETA
#: is granted to the outsider key only.
ACME, QUICK, LONG, BETA = "acme", "quick", "long", "beta"
QUICK_TTL_SECONDS = 2


def exoarmur_bin() -> str:
    """The binary under test: $EXOARMUR_BIN or <repo>/bin/exoarmur."""
    path = os.environ.get("EXOARMUR_BIN") or str(REPO_ROOT / "bin" / "exoarmur")
    path = os.path.abspath(path)
    if not os.access(path, os.X_OK):
        raise RuntimeError(
            "the exoarmur binary %s is missing or not executable: build it (make test-python does, "
            "or: go build -o bin/exoarmur ./cmd/exoarmur) or set EXOARMUR_BIN" % path
        )
    return path


def free_port() -> int:
    """A loopback port nothing listens on (at the time of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One ``exoarmur serve`` process and the keys of its store.

    ``keys`` maps a role name to its API key: ``admin`` (tenants system,
    acme, quick; every action), ``agent`` (acme, quick, long), ``op1``
    (owner alice; acme, quick, long) and ``op2`` (owner bob; acme, quick),
    operators, ``auditor`` (acme, long; reads everything of them, acts on
    nothing) and ``outsider``, an agent of beta only.
    """

    def __init__(self) -> None:
        self.bin = exoarmur_bin()
        self.tmp = tempfile.mkdtemp(prefix="exoarmur-py-")
        self.data_dir = os.path.join(self.tmp, "data")
        self.sandbox_dir = os.path.join(self.tmp, "sandbox")
        os.makedirs(os.path.join(self.sandbox_dir, ACME))
        self.keys: Dict[str, str] = {}
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.url = ""
        self._log_path = os.path.join(self.tmp, "serve.log")

    def _run(self, args: List[str], env: Optional[Dict[str, str]] = None) -> str:
        res = subprocess.run([self.bin] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
        if res.returncode != 0:
            raise RuntimeError("exoarmur %s: exit %d\n%s" % (" ".join(args), res.returncode, res.stderr.decode(errors="replace")))
        return res.stdout.decode()

    def create_key(self, name: str, role: str, tenants: List[str], owner: Optional[str] = None) -> str:
        """``exoarmur keys create`` on the (stopped) store; returns the key."""
        args = ["keys", "create", "--data-dir", self.data_dir, "--name", name, "--role", role, "--actions", "*"]
        for t in tenants:
            args += ["--tenant", t]
        if owner:
            args += ["--owner", owner]
        key = self._run(args).strip()
        if not key.startswith("exo_"):
            raise RuntimeError("keys create printed %r" % key)
        return key

    def start(self) -> None:
        """Create the keys, start serve, wait for /readyz, open the switches."""
        self.keys["admin"] = self.create_key("root", "admin", ["system", ACME, QUICK])
        self.keys["agent"] = self.create_key("bot", "agent", [ACME, QUICK, LONG])
        self.keys["op1"] = self.create_key("ops-alice", "operator", [ACME, QUICK, LONG], owner="alice")
        self.keys["op2"] = self.create_key("ops-bob", "operator", [ACME, QUICK], owner="bob")
        self.keys["auditor"] = self.create_key("reviewer", "auditor", [ACME, LONG])
        self.keys["outsider"] = self.create_key("stranger", "agent", [BETA])
        addr = "127.0.0.1:%d" % free_port()
        self.url = "http://" + addr
        log = open(self._log_path, "wb")
        try:
            self.proc = subprocess.Popen(
                [self.bin, "serve", "--data-dir", self.data_dir, "--listen", addr, "--sandbox-dir", self.sandbox_dir,
                 "--approval-ttl-tenant", "%s=%ds" % (QUICK, QUICK_TTL_SECONDS)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        probe = Client(self.url, "", timeout=2)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("exoarmur serve exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                probe.ready()
                break
            except ExoArmurError:
                if time.monotonic() > deadline:
                    raise RuntimeError("exoarmur serve not ready after 30 s:\n" + self.log())
                time.sleep(0.05)
        env = dict(os.environ, EXOARMUR_API_KEY=self.keys["admin"])
        self._run(["killswitch", "disengage", "--reason", "python client tests", "--server", self.url], env=env)
        self._run(["killswitch", "disengage", "--tenant", ACME, "--reason", "python client tests", "--server", self.url], env=env)

    def client(self, who: str) -> Client:
        """A client of this server with the key of ``who`` (see ``keys``)."""
        return Client(self.url, self.keys[who], timeout=10)

    def sandbox_file(self, tenant: str, path: str) -> str:
        """Where the fs executors keep ``path`` of ``tenant``."""
        return os.path.join(self.sandbox_dir, tenant, path)

    def log(self) -> str:
        """The server's output so far."""
        try:
            with open(self._log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM the serve process by its PID (SIGKILL after 10 s) and
        remove the temporary directory."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        shutil.rmtree(self.tmp, ignore_errors=True)


def module_fixtures(module_globals: Dict[str, Any]) -> Tuple[Callable[[], None], Callable[[], None]]:
    """Return setUpModule and tearDownModule for a test module: one
    :class:`Server` per module, as the module's global ``SERVER``.

    Plain module functions, not addModuleCleanup: Python 3.8's discover
    never calls module cleanups. A failed start stops what it started
    (tearDownModule does not run when setUpModule fails).
    """

    def set_up_module() -> None:
        server = Server()
        module_globals["SERVER"] = server
        try:
            server.start()
        except BaseException:
            server.stop()
            raise

    def tear_down_module() -> None:
        module_globals["SERVER"].stop()

    return set_up_module, tear_down_module
