"""``usher up``: everything on one machine for one data directory, stopped cleanly with Ctrl-C.

What it keeps in USHER_HOME: ``up.lock`` (locked while it runs; names its pid and URL),
``admin-token`` (mode 0600, reused while the database still accepts it), ``demo-sent`` (the
demo events go once) and ``logs/<process>.log`` (the children's whole output: the console
gets one line per step and, last, the URL and the token in a frame).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import socket
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy.exc

from app import config, db, tokens
from app.cli import processes
from app.errors import UsherError
from policies import packs, recovery

if TYPE_CHECKING:
    import subprocess

    from app.cli.common import Runtime

DEMO_PACKS = "examples/packs"
LOCK = "up.lock"
TOKEN_FILE = "admin-token"
DEMO_SENT = "demo-sent"
TOKEN_NAME = "usher-up"
READY_S = 120.0  # until the web server's first 200 on /healthz
STOP_S = 10.0  # for web and beat; and the workers' margin past their own grace


def say(line: str = "", err: bool = False) -> None:
    """One plain line, flushed at once: a pipe gets it whole and as soon as a terminal does."""
    print(line, file=sys.stderr if err else sys.stdout, flush=True)


@dataclass
class Stop:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed) ask for a clean stop. The
    handler only counts them: the waiting loops look and print (a print in a handler could
    break into a line being printed)."""

    asked: int = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.asked += 1

    def install(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self)


@dataclass
class Child:
    name: str
    args: list[str]
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def worker(self) -> bool:
        return self.args[0] == "worker"


@dataclass(frozen=True)
class Options:
    demo: bool = False
    again: bool = False
    verbose: bool = False
    workers: int = 1
    concurrency: int = 4


def run(rt: Runtime, options: Options) -> None:
    # The lock comes before anything else: a second `usher up` on this directory must not
    # join the first one's embedded Postgres (and stop it on its way out).
    early = config.load(**rt.overrides)
    home = early.home.resolve()
    url = local_url(early)
    lock = hold(home, url)
    stop = Stop()
    stop.install()
    check_port(early)
    if early.database_url is None:
        say(f"starting the embedded Postgres in {home / 'pg'}")
    settings = rt.settings  # starts (or joins) the embedded Postgres
    try:
        code = serve(rt, home, url, stop, options)
    finally:
        rt.engine.dispose()
        if rt.embedded:
            db.stop_embedded(settings.home)
        os.close(lock)
    say("stopped")
    if code:
        sys.exit(code)


def serve(rt: Runtime, home: Path, url: str, stop: Stop, options: Options) -> int:
    """Prepare the database, run the children until asked to stop, stop them; the exit code."""
    settings = rt.settings
    assert settings.database_url
    db.upgrade(settings.database_url)
    if options.demo:
        with db.unit_of_work(rt.engine) as session:
            loaded = packs.load(session, processes.REPO / DEMO_PACKS)
        say(f"loaded the demo pack(s): {', '.join(s.name for s in loaded)}")
    token = admin_token(rt, home)
    if stop.asked:
        return 0
    children = start(settings, home, options.workers, options.concurrency)
    say(f"started web, beat and {options.workers} worker(s); their output: {home / 'logs'}")
    following = None
    if options.verbose:
        worker_logs = {c.name: c.log for c in children if c.worker}
        following = processes.follow(worker_logs, say)
    try:
        code = wait_ready(url, children, stop)
        if code == 0 and not stop.asked:
            if options.demo:
                send_demo(rt, home, options.again)
            say(
                f"Ctrl-C stops it all (running executions get up to {settings.shutdown_grace_s:g}s)"
            )
            for line in framed([("dashboard", url), ("admin token", token)]):
                say(line)
            code = supervise(children, stop)
    finally:
        shut_down(rt, children, stop)
        if following is not None:
            following.set()
    return code


def hold(home: Path, url: str) -> int:
    """Lock USHER_HOME for this process, or refuse with who holds it. The lock goes with the
    process however it ends (kill -9 too); the file stays."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 500).decode(errors="replace").strip() or "starting"
        os.close(fd)
        raise UsherError(
            f"{home} is in use by another usher up ({holder}); stop that one (Ctrl-C) or "
            "give this one another USHER_HOME"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}, {url}\n".encode())
    return fd


def local_url(settings: config.Settings) -> str:
    host = settings.web_host
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    return f"http://{f'[{host}]' if ':' in host else host}:{settings.web_port}/"


def check_port(settings: config.Settings) -> None:
    """Refuse at once an address another server listens on (the web child would die of it)."""
    host, port = settings.web_host, settings.web_port
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            # As waitress binds: the TIME_WAIT of a closed connection does not count.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        raise UsherError(
            f"cannot serve on {host}:{port} ({error.strerror or error}): another server "
            "listens there; USHER_WEB_PORT picks another port"
        ) from None


def admin_token(rt: Runtime, home: Path) -> str:
    """The admin token to print, kept in USHER_HOME across runs: reused while the database
    still accepts it as an admin token, else a new one stored as `usher tokens create` does.
    With USHER_API_TOKEN set, that one (the operator holds it, it is not shown)."""
    if rt.settings.api_token:
        return "the value of USHER_API_TOKEN"
    path = home / TOKEN_FILE
    kept = path.read_text().strip() if path.exists() else ""
    with db.unit_of_work(rt.engine) as session:
        identity = tokens.identify(session, kept, None) if kept else None
        if identity is not None and identity.admin:
            path.chmod(0o600)
            say(f"admin token: the one kept in {path}")
            return kept
        # Names are never reused, revoked ones included.
        taken = {row["name"] for row in tokens.listing(session)}
        names = (TOKEN_NAME if n == 1 else f"{TOKEN_NAME}-{n}" for n in itertools.count(1))
        name = next(n for n in names if n not in taken)
        token = tokens.create(session, name)
    fd, temporary = tempfile.mkstemp(dir=home, prefix=f".{TOKEN_FILE}.")  # mode 0600
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    os.replace(temporary, path)
    say(f"admin token: a new one ({name!r}), kept in {path} for the next runs")
    return token


def start(settings: config.Settings, home: Path, workers: int, concurrency: int) -> list[Child]:
    assert settings.database_url
    env = dict(
        os.environ,
        USHER_DATABASE_URL=settings.database_url,
        USHER_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    # Plain HTTP on this machine: a Secure cookie would never come back.
    env.setdefault("USHER_INSECURE_COOKIES", "true")
    commands = {"web": ["web"], "beat": ["beat"]}
    for i in range(1, workers + 1):
        commands[f"worker{i}"] = ["worker", "-c", str(concurrency), "-n", f"worker{i}@%h"]
    logs = home / "logs"
    logs.mkdir(exist_ok=True)
    header = f"--- usher up, pid {os.getpid()}, {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC ---\n"
    children = []
    for name, args in commands.items():
        log = logs / f"{name}.log"
        with log.open("a") as out:
            out.write(header)
        children.append(Child(name, args, processes.spawn(args, env, log), log))
    return children


def exited(children: list[Child]) -> int:
    """0 while every child runs; else 1, once the first one that exited is reported."""
    for child in children:
        code = child.process.poll()
        if code is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited ({code})"
            say(f"error: usher {' '.join(child.args)} {how}", err=True)
            lines = child.log.read_text(errors="replace").splitlines()[-15:]
            for line in lines:
                say(f"  {line}", err=True)
            say(f"stopping everything (the whole output: {child.log})", err=True)
            return 1
    return 0


def wait_ready(url: str, children: list[Child], stop: Stop) -> int:
    """0 once GET /healthz answers 200 (or a stop is asked); 1 if a child exits or the web
    server does not answer within READY_S."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    deadline = time.monotonic() + READY_S
    while not stop.asked:
        if exited(children):
            return 1
        try:
            with direct.open(f"{url}healthz", timeout=2) as response:
                if response.status == 200:
                    return 0
        except OSError:
            pass
        if time.monotonic() > deadline:
            say(f"error: {url}healthz did not answer 200 within {READY_S:g}s", err=True)
            return 1
        time.sleep(0.2)
    return 0


def supervise(children: list[Child], stop: Stop) -> int:
    while not stop.asked:
        if exited(children):
            return 1
        time.sleep(0.2)
    return 0


def framed(rows: list[tuple[str, str]]) -> list[str]:
    """Rows of label and value in a box (ASCII unless stdout takes UTF-8)."""
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    inner = max(len(line) for line in lines)
    utf8 = (sys.stdout.encoding or "").lower().replace("-", "") == "utf8"
    tl, h, tr, v, bl, br = "╭─╮│╰╯" if utf8 else "+-+|++"
    return [
        tl + h * (inner + 2) + tr,
        *(f"{v} {line:<{inner}} {v}" for line in lines),
        bl + h * (inner + 2) + br,
    ]


def running(rt: Runtime, children: list[Child]) -> int | None:
    """Executions marked running on these workers (None if the database does not answer)."""
    host = socket.gethostname()  # the %h of their node names
    try:
        with db.unit_of_work(rt.engine) as session:
            return sum(len(recovery.running_on(session, f"{c.name}@{host}")) for c in children)
    except sqlalchemy.exc.SQLAlchemyError:
        return None


def shut_down(rt: Runtime, children: list[Child], stop: Stop) -> None:
    """Web and beat first (nothing new starts), then each worker once: a worker finishes its
    running executions within USHER_SHUTDOWN_GRACE_S and releases what is left itself, so it
    is given that grace and STOP_S more before it is killed."""
    if sys.stdout.isatty() and stop.asked:
        say()  # past the terminal's ^C
    say("stopping web and beat")
    processes.stop([c.process for c in children if not c.worker], STOP_S)
    workers = [c for c in children if c.worker]
    grace = rt.settings.shutdown_grace_s
    count = running(rt, workers)
    if count:
        say(f"stopping the worker(s): {count} running execution(s) get up to {grace:g}s to finish")
    else:
        say("stopping the worker(s)")
    deadline, seen = time.monotonic() + grace + STOP_S, stop.asked

    def waiting() -> None:
        nonlocal seen
        if stop.asked > seen:
            seen = stop.asked
            left = max(deadline - time.monotonic(), 0)
            say(
                f"still finishing running executions (at most {left:.0f}s more; "
                "cut short, they would run again)"
            )

    for child in processes.stop([c.process for c in workers], grace + STOP_S, waiting):
        name = next(c for c in workers if c.process is child).name
        say(f"warning: {name} did not stop within {grace + STOP_S:g}s and was killed", err=True)
    left = running(rt, workers)
    if left:
        say(
            f"warning: {left} execution(s) left running: retried once their lease expires", err=True
        )


DEMO_EVENTS: list[tuple[str, dict[str, object]]] = [
    ("alert", {"severity": "high", "host": "db1"}),
    ("alert", {"severity": "critical", "host": "db2"}),
    ("alert", {"severity": "high", "host": "db1"}),
    ("alert", {"severity": "low", "host": "web1"}),
    ("alert", {"severity": "high", "host": "web2"}),
    ("data_changed", {"source": "crm"}),
    ("data_changed", {"source": "billing"}),
    ("data_changed", {"source": "inventory"}),
    ("order_created", {"id": 1001, "amount": 25.0}),
    ("order_created", {"id": 1002, "amount": -5.0}),
    ("order_created", {"id": 1003, "amount": 12.5}),
]


def send_demo(rt: Runtime, home: Path, again: bool) -> None:
    """The demo events, once per data directory (``again``: once more)."""
    marker = home / DEMO_SENT
    if marker.exists() and not again:
        sent = marker.read_text().strip()
        say(f"demo events: sent {sent} already (`usher up --demo --again` sends them again)")
        return
    fire_demo(rt)
    marker.write_text(f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")


def fire_demo(rt: Runtime) -> None:
    """Send the demo events through the real path: stored, then matched by a worker."""
    from app import celery as usher_celery
    from policies import events

    ids = []
    with db.unit_of_work(rt.engine) as session:
        for trigger, payload in DEMO_EVENTS:
            ids.append(events.store(session, trigger, payload))
    for event_id in ids:
        usher_celery.send_event(rt.celery, event_id)
    say(f"sent {len(ids)} demo events (some fail on purpose: retries, a dead letter)")
