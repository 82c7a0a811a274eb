"""``usher web --processes N``: N waitress processes on one listening socket, so intake and
the dashboard use every core (one process's Python runs on one core at a time).

The parent binds the socket, then forks the children, each of which makes its own app,
engine and broker connection (none is shared over a fork) and accepts on the shared socket;
the kernel hands each connection to one of them. The parent only supervises: a child that
dies is started again (after a second, so a child that cannot start does not spin), and
SIGTERM or SIGINT stops them all (each finishes the requests it has, as waitress does).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any

from rich.console import Console

from app import config, db

RESTART_PAUSE_S = 1.0


def _child(settings: config.Settings, listener: socket.socket, threads: int) -> None:
    """A child's whole life: serve on the shared socket until told to stop."""
    import web
    from app import celery as usher_celery
    from app.cli.serve import create_server

    # Not the parent's handlers (a child forked after they were set has them): until it
    # serves, SIGTERM ends a child at once; the parent's Ctrl-C reaches it as SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        flask_app = web.create_app(settings, usher_celery.create(settings))
        server = create_server(flask_app, settings.max_body_bytes, "", 0, threads, listener)

        def stop(*_: Any) -> None:
            server.close()
            raise SystemExit(0)

        signal.signal(signal.SIGTERM, stop)
        server.run()
    except SystemExit as exiting:
        code = exiting.code if isinstance(exiting.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _fork(settings: config.Settings, listener: socket.socket, threads: int) -> int:
    pid = os.fork()
    if pid == 0:
        _child(settings, listener, threads)
    return pid


def serve(
    settings: config.Settings, host: str, port: int, processes: int, threads: int, console: Console
) -> None:
    listener = socket.create_server((host, port), backlog=2048)
    db.dispose_all()  # no pooled connection may cross the fork
    children = {_fork(settings, listener, threads) for _ in range(processes)}
    console.print(f"serving on http://{host}:{port} with {processes} processes")
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        children.discard(pid)
        if stopping:
            continue
        console.print(
            f"web process {pid} ended ({os.waitstatus_to_exitcode(status)}); starting another",
            highlight=False,
        )
        time.sleep(RESTART_PAUSE_S)
        children.add(_fork(settings, listener, threads))
    listener.close()
