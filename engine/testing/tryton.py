"""A real Tryton 8.2 server for tests: a temporary SQLite database served on a free port.

Building the database (``trytond-admin --all`` then the purchase, stock, stock_lot and
account_invoice modules, a company, a chart of accounts, a fiscal year and a payment term)
takes 30-40 s, so the built file is kept as a template in ``cache_dir`` and copied for each
server; the template's name carries the trytond version and the module list.

    with TrytonServer(tmp_path) as tryton:          # builds (or copies) and serves
        tryton.url                                  # http://127.0.0.1:PORT
        tryton.rpc_url                              # .../DB/rpc/ (JSON-RPC, basic auth)
        tryton.proteus_url                          # for proteus.config.set_xmlrpc
    # stopped by its pid (SIGTERM, then SIGKILL after a bounded wait)

Requires the ``trytond``, ``trytond-purchase``, ``trytond-stock``, ``trytond-stock-lot``,
``trytond-account-invoice`` and ``proteus`` packages (the ``test`` extra).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

from engine.testing.peers import free_port

__all__ = ["DEFAULT_MODULES", "TrytonServer", "tryton_available"]

DEFAULT_MODULES = ("purchase", "stock", "stock_lot", "account_invoice")
ADMIN_PASSWORD = "junction-test-admin"  # noqa: S105 - a throwaway test database on 127.0.0.1
BUILD_TIMEOUT_SECS = 300.0
START_TIMEOUT_SECS = 60.0
STOP_TIMEOUT_SECS = 15.0

# Runs in a subprocess with proteus talking to trytond in-process (no server yet): the
# accounting a draft supplier invoice needs, set up with trytond's own scenario tools.
_SETUP_SCRIPT = """
import datetime as dt
import sys

from proteus import Model, config
from trytond.modules.account.tests.tools import create_chart, create_fiscalyear, get_accounts
from trytond.modules.account_invoice.tests.tools import create_payment_term, set_fiscalyear_invoice_sequences
from trytond.modules.company.tests.tools import create_company

config.set_trytond(sys.argv[1], config_file=sys.argv[2])
Party = Model.get("party.party")
create_company(party=Party(name="Junction Test Hospital"), currency="USD")
create_chart()
fiscalyear = set_fiscalyear_invoice_sequences(create_fiscalyear(today=dt.date.today()))
fiscalyear.click("create_period")
term = create_payment_term()
term.save()
accounts = get_accounts()
Category = Model.get("product.category")
category = Category(name="Medical supplies", accounting=True)
category.account_expense = accounts["expense"]
category.account_revenue = accounts["revenue"]
category.save()
"""


def tryton_available() -> str | None:
    """None when trytond and proteus can be imported, else why not (for ``pytest.skip``)."""
    import importlib.util

    for name in ("proteus", "trytond", "trytond.modules.account_invoice", "trytond.modules.stock_lot"):
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:
            found = False
        if not found:
            return f"Tryton is not installed ({name}); install the test extra"
    return None


def _wire(value: Any) -> Any:
    """Tryton's JSON encoding of Decimal and date values (nested)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_wire(v) for v in value]
    return value


def _unwire(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"], obj["month"], obj["day"], obj["hour"], obj["minute"], obj["second"], obj["microsecond"]
        )
    return obj


def _bin(name: str) -> str:
    """The console script next to this interpreter (trytond, trytond-admin)."""
    candidate = Path(sys.executable).with_name(name)
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


class TrytonServer:
    """Builds a Tryton database in ``workdir`` and serves it with ``trytond`` on 127.0.0.1."""

    def __init__(
        self,
        workdir: Path,
        *,
        database: str = "junction",
        modules: tuple[str, ...] = DEFAULT_MODULES,
        cache_dir: Path | None = None,
        port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.database = database
        self.modules = modules
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "junction-tryton-cache"
        self.port = port or free_port()
        self.username = "admin"
        self.password = ADMIN_PASSWORD
        self.db_dir = self.workdir / "db"
        self.conf = self.workdir / "trytond.conf"
        self.pidfile = self.workdir / "trytond.pid"
        self.log_path = self.workdir / "trytond.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.build_secs = 0.0
        self._context: dict[str, Any] | None = None
        self._session: str | None = None

    # -- addresses -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        return f"{self.url}/{self.database}/rpc/"

    @property
    def proteus_url(self) -> str:
        """For ``proteus.config.set_xmlrpc`` (credentials in the URL: test use only)."""
        return f"http://{self.username}:{self.password}@127.0.0.1:{self.port}/{self.database}/rpc/"

    def rpc(self, method: str, *params: Any) -> Any:
        """A blocking JSON-RPC call as the admin user (to set up and read back test data).

        Raises ``RuntimeError`` with Tryton's error when the call fails.
        """
        if self._session is None:  # one login: basic auth would hash the password per call
            user_id, key, *_ = self._post("common.db.login", [self.username, {"password": self.password}], None)
            token = base64.b64encode(f"{self.username}:{user_id}:{key}".encode()).decode("ascii")
            self._session = f"Session {token}"
        return self._post(method, [_wire(p) for p in params], self._session)

    def _post(self, method: str, params: list[Any], authorization: str | None) -> Any:
        body = json.dumps({"id": 1, "method": method, "params": params}).encode()
        headers = {"Content-Type": "application/json"}
        if authorization:
            headers["Authorization"] = authorization
        request = urllib.request.Request(  # noqa: S310 - loopback http
            self.rpc_url, data=body, headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - loopback http
            answer = json.loads(response.read(), object_hook=_unwire)
        if answer.get("error") is not None:
            raise RuntimeError(f"{method} failed: {answer['error']}")
        return answer["result"]

    def model(self, model: str, method: str, *params: Any, context: dict[str, Any] | None = None) -> Any:
        """``model.<model>.<method>(*params, context)`` with the admin's company context."""
        if self._context is None:
            prefs = self.rpc("model.res.user.get_preferences", True, {})
            self._context = {k: prefs[k] for k in ("company", "companies", "language") if k in prefs}
        return self.rpc(f"model.{model}.{method}", *params, {**self._context, **(context or {})})

    # -- build ---------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        passfile = self.workdir / "admin-password"
        passfile.write_text(self.password, encoding="utf-8")
        env = {**os.environ, "TRYTONPASSFILE": str(passfile), "TRYTOND_CONFIG": str(self.conf)}
        env.pop("TRYTOND_DATABASE_URI", None)
        return env

    def _write_config(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db_dir.mkdir(exist_ok=True)
        self.conf.write_text(
            f"[database]\nuri = sqlite://\npath = {self.db_dir}\n[web]\nlisten = 127.0.0.1:{self.port}\n",
            encoding="utf-8",
        )

    def _template(self) -> Path:
        """The cache file: its name changes with any trytond package version, the modules or the setup."""
        from importlib.metadata import distributions

        import trytond

        versions = sorted(
            f"{dist.metadata['Name']}=={dist.version}"
            for dist in distributions()
            if str(dist.metadata["Name"] or "").lower().replace("-", "_").startswith(("trytond", "proteus"))
        )
        digest = hashlib.sha256(f"{versions}:{','.join(self.modules)}:{_SETUP_SCRIPT}".encode())
        return self.cache_dir / f"tryton-{trytond.__version__}-{digest.hexdigest()[:12]}.sqlite"

    def _run(self, args: list[str], what: str) -> None:
        with self.log_path.open("ab") as log:
            done = subprocess.run(
                args,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=BUILD_TIMEOUT_SECS,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed with exit code {done.returncode}:\n{self.log_text()[-4000:]}")

    def build(self) -> Path:
        """Create the database file (from the cached template when there is one); returns it."""
        started = time.monotonic()
        self._write_config()
        target = self.db_dir / f"{self.database}.sqlite"
        template = self._template()
        if not template.exists():
            self._build_into(self.database)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            partial = template.with_suffix(f".{os.getpid()}.part")
            shutil.copyfile(target, partial)
            partial.replace(template)  # atomic: a parallel build never sees half a file
        else:
            shutil.copyfile(template, target)
        self.build_secs = time.monotonic() - started
        return target

    def _build_into(self, database: str) -> None:
        (self.db_dir / f"{database}.sqlite").write_bytes(b"")
        admin = _bin("trytond-admin")
        conf = str(self.conf)
        self._run([admin, "-c", conf, "-d", database, "--all", "--email", "admin@example.com"], "trytond-admin --all")
        self._run(
            [admin, "-c", conf, "-d", database, "-u", *self.modules, "--activate-dependencies"],
            "trytond-admin -u " + " ".join(self.modules),
        )
        self._run([sys.executable, "-c", _SETUP_SCRIPT, database, conf], "accounting setup")

    # -- serve ---------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_SECS) -> TrytonServer:
        """Serve the database and wait (bounded) until its RPC endpoint answers."""
        if not (self.db_dir / f"{self.database}.sqlite").exists():
            self.build()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [_bin("trytond"), "-c", str(self.conf), "-d", self.database, "--pidfile", str(self.pidfile)],
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"trytond exited with {self.proc.returncode}:\n{self.log_text()[-4000:]}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"trytond did not answer within {timeout}s:\n{self.log_text()[-4000:]}")

    def _answers(self) -> bool:
        request = urllib.request.Request(  # noqa: S310 - loopback http
            f"{self.url}/rpc/",
            data=b'{"id": 0, "method": "common.server.version", "params": []}',
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback http
                return bool(response.status == 200)
        except urllib.error.HTTPError:
            return True  # it answered, so it listens
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server by its pid: SIGTERM, then SIGKILL after a bounded wait."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_SECS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_SECS)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> TrytonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
