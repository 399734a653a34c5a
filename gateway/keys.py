"""Where secret keys come from: the environment, or a key file kept apart.

Keys never sit in the configuration file and have no default.  A peer's MAC
key is named in ``[peers.NAME]`` by *where* it is: ``mac_key_env`` (the name
of an environment variable holding 32 hexadecimal characters) or
``mac_key_file`` (a file holding them).  A key file must be outside the
configuration's directory and the packaged ``conf/`` (configuration gets
copied, committed and mailed around; keys must not travel with it) and
readable by its owner only, as ssh insists for private keys.

The PAN's keyed hash takes its secret from ``BILLGW_PAN_HMAC_KEY`` only.

These functions read the environment and files, so they run once, when the
configuration is loaded; errors are ``ValueError`` naming what is wrong,
which the configuration turns into a message naming the key.
"""
from __future__ import annotations

import os
import stat
from importlib import resources
from pathlib import Path
from typing import Mapping

from billgw.iso8583.mac import MacKey
from billgw.iso8583.masking import PanHasher

PAN_HMAC_ENV = "BILLGW_PAN_HMAC_KEY"
PAN_HMAC_MIN_LENGTH = 32


def _conf_dirs(config_dir: Path | None) -> list[Path]:
    dirs = [Path(str(resources.files("billgw.conf"))).resolve()]
    if config_dir is not None:
        dirs.append(config_dir.resolve())
    return dirs


def mac_key_from_env(name: str, environ: Mapping[str, str], padding: int) -> MacKey:
    if name not in environ or not environ[name].strip():
        raise ValueError(f"environment variable {name} is not set (it holds the peer's MAC key)")
    try:
        return MacKey.from_hex(environ[name], padding)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}: {exc}") from None


def mac_key_from_file(path: str, config_dir: Path | None, padding: int) -> MacKey:
    file = Path(path).expanduser()
    if not file.is_absolute():
        raise ValueError(f"{path}: give the key file's absolute path")
    file = file.resolve()
    for conf in _conf_dirs(config_dir):
        if file == conf or conf in file.parents:
            raise ValueError(f"{path}: a key file must not be kept beside the configuration ({conf})")
    try:
        mode = stat.S_IMODE(os.stat(file).st_mode)
        text = file.read_text("ascii")
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the key file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: the key file must hold 32 hexadecimal characters") from None
    if mode & 0o077:
        raise ValueError(f"{path}: the key file is readable by others (mode {oct(mode)}); chmod 600 it")
    try:
        return MacKey.from_hex(text, padding)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def pan_hasher_from_env(environ: Mapping[str, str]) -> PanHasher | None:
    """The PAN hasher keyed by ``BILLGW_PAN_HMAC_KEY``, or None when it is
    not set (then no hash is kept; the gateway says so once at start-up).
    A key shorter than 32 characters is refused: it could be guessed."""
    secret = environ.get(PAN_HMAC_ENV, "")
    if not secret:
        return None
    if len(secret) < PAN_HMAC_MIN_LENGTH:
        raise ValueError(f"environment variable {PAN_HMAC_ENV}: at least {PAN_HMAC_MIN_LENGTH} characters")
    return PanHasher(secret.encode("utf-8"))
