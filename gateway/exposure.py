"""What the gateway exposes: its listen endpoint and the files it creates.

Pure helpers for the composition root (gateway/service.py):

- :func:`listen_endpoint` adds the configured listen backlog to a Twisted
  endpoint string (``tcp:8583:interface=127.0.0.1`` ->
  ``...:backlog=512``) unless the string sets its own;
- :func:`exposure_warning` says why a listener is exposed -- an address
  other than loopback without TLS carries card data in clear on a shared
  network -- or None;
- :func:`secure_sqlite_file` makes the SQLite journal (and so its WAL and
  SHM files, which SQLite creates with the main file's mode) readable by
  the gateway's user only; :func:`open_private` does the same for a log.
"""
from __future__ import annotations

import ipaddress
import os
import re
import stat

PRIVATE_FILE_MODE = 0o600
_LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def listen_endpoint(endpoint: str, backlog: int) -> str:
    """``endpoint`` with ``backlog=N`` added (tcp, ssl, tcp6), unless set."""
    args, kwargs = _split(endpoint)
    if args and args[0] in ("tcp", "tcp6", "ssl") and "backlog" not in kwargs:
        return f"{endpoint}:backlog={backlog}"
    return endpoint


def _split(endpoint: str) -> tuple[list[str], dict[str, str]]:
    """Twisted's endpoint grammar: ``kind:arg:key=value``, ``\\:`` escaping
    a colon (an IPv6 interface).  A bad string fails later, in
    ``serverFromString``, with Twisted's own message."""
    args, kwargs = [], {}
    for part in re.split(r"(?<!\\):", endpoint):
        part = part.replace("\\:", ":")
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key] = value
        else:
            args.append(part)
    if args:
        args[0] = args[0].lower()
    return args, kwargs


def exposure_warning(endpoint: str, tls: bool = False) -> str | None:
    """Why this listener is exposed, or None (loopback, or TLS: an ``ssl:``
    endpoint, or ``tls`` when the gateway adds it, [gateway.tls])."""
    args, kwargs = _split(endpoint)
    if tls or not args or args[0] == "ssl":
        return None
    if args[0] not in ("tcp", "tcp6"):
        return None  # unix sockets and others: not on the network
    interface = kwargs.get("interface", "" if args[0] == "tcp" else "::")
    if interface in _LOOPBACK_NAMES:
        return None
    try:
        if ipaddress.ip_address(interface).is_loopback:
            return None
    except ValueError:
        pass  # a host name: cannot tell, so warn
    shown = interface or "every interface"
    return (f"the ISO 8583 listener is on {shown}, not loopback, without TLS: card data and payments "
            "cross the network in clear (docs/security.md)")


def open_private(path, mode: str = "w", encoding: str = "utf-8"):
    """Open a file the gateway writes (a log) readable by its owner only,
    whatever the umask, and take group/other access from an old one."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, mode, encoding=encoding)


def sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` URL, None for other databases or memory."""
    if not url.startswith("sqlite:///") or ":memory:" in url:
        return None
    return url[len("sqlite:///"):].split("?", 1)[0] or None


def secure_sqlite_file(url: str) -> tuple[str, int] | None:
    """Create the journal file owner-only, or take group/other access away
    from an existing one.  Returns (path, old mode) when a mode was changed
    on an existing file (the caller logs it), else None."""
    path = sqlite_path(url)
    if path is None:
        return None
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, PRIVATE_FILE_MODE)
    except FileExistsError:
        changed = None
        for name in (path, path + "-wal", path + "-shm", path + "-journal"):
            try:
                mode = stat.S_IMODE(os.stat(name).st_mode)
            except FileNotFoundError:
                continue
            if mode & 0o077:
                os.chmod(name, mode & 0o700)
                if name == path:
                    changed = (path, mode)
        return changed
    os.close(fd)
    return None
