"""A network guard for tests that drive third-party clients: only loopback and Unix sockets connect.

`block_network` turns every other ``connect`` (pytest-socket's ``socket_allow_hosts``) and every
name lookup of another host into an error, and records the attempt: clients such as geotessera
catch broad exceptions and carry on, so a test asserts the record is empty rather than relying on
an exception reaching it. `sitecustomize_dir` installs the same guard in child processes (command
line tools) through a ``sitecustomize`` module on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest_socket

__all__ = ["LOG_ENV", "block_network", "child_env", "sitecustomize_dir"]

LOOPBACK = ["127.0.0.1", "::1", "localhost"]
#: Child processes append blocked attempts to this file.
LOG_ENV = "TESSERA_TEST_BLOCKED_LOG"
_ROOT = Path(__file__).resolve().parents[1]


def block_network(record: Callable[[str], None]) -> Callable[[], None]:
    """Allow loopback only; ``record`` gets a line per blocked attempt. Returns the function that undoes it."""
    saved = socket.socket.connect, socket.getaddrinfo
    pytest_socket.socket_allow_hosts(LOOPBACK, allow_unix_socket=True)
    guarded, lookup = socket.socket.connect, socket.getaddrinfo

    def connect(inst: socket.socket, *args: Any) -> Any:
        try:
            return guarded(inst, *args)
        except pytest_socket.SocketConnectBlockedError:
            record(f"connect {args!r}")
            raise

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (None, *LOOPBACK, b"localhost", "127.0.0.1"):
            record(f"lookup {host!r}")
            raise OSError(f"name lookup of {host!r} blocked by the test's network guard")
        return lookup(host, *args, **kwargs)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo

    def undo() -> None:
        socket.socket.connect, socket.getaddrinfo = saved  # type: ignore[method-assign]

    return undo


def sitecustomize_dir(tmp: Path) -> Path:
    """A directory whose ``sitecustomize`` installs the guard (log file in ``$TESSERA_TEST_BLOCKED_LOG``)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(_ROOT)!r})\n"
        "from tests.offline import block_network, LOG_ENV\n"
        "def _record(line):\n"
        "    with open(os.environ[LOG_ENV], 'a') as fh:\n"
        "        fh.write(line + '\\n')\n"
        "block_network(_record)\n"
    )
    return tmp


def child_env(tmp: Path, log: Path) -> dict[str, str]:
    """The environment of a guarded child process."""
    path = os.pathsep.join(p for p in (str(sitecustomize_dir(tmp)), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, LOG_ENV: str(log)}
