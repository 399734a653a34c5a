"""The listen endpoint (backlog, exposure warning) and the journal file's mode."""
import os
import stat

import pytest
from sqlalchemy import text

from billgw.gateway.db import make_engine
from billgw.gateway.exposure import exposure_warning, listen_endpoint, secure_sqlite_file, sqlite_path


def test_backlog_is_added_unless_the_endpoint_sets_one():
    assert listen_endpoint("tcp:8583:interface=127.0.0.1", 512) == "tcp:8583:interface=127.0.0.1:backlog=512"
    assert listen_endpoint("tcp:8583:backlog=7", 512) == "tcp:8583:backlog=7"
    assert listen_endpoint("unix:/run/billgw.sock", 512) == "unix:/run/billgw.sock"


@pytest.mark.parametrize("endpoint, exposed", [
    ("tcp:8583:interface=127.0.0.1", False),
    ("tcp:0:interface=127.0.0.2", False),
    (r"tcp6:8583:interface=\:\:1", False),
    ("tcp:8583:interface=localhost", False),
    ("tcp:8583", True),  # every interface
    ("tcp:8583:interface=0.0.0.0", True),
    ("tcp:8583:interface=10.0.0.7", True),
    ("tcp6:8583", True),
    ("ssl:8583:interface=0.0.0.0:privateKey=k.pem", False),  # TLS: not in clear
])
def test_a_listener_off_loopback_without_tls_is_named_exposed(endpoint, exposed):
    warning = exposure_warning(endpoint)
    assert (warning is not None) is exposed
    if exposed:
        assert "not loopback, without TLS" in warning


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_journal_file_is_created_owner_only_and_so_are_its_wal_files(tmp_path):
    url = f"sqlite:///{tmp_path / 'var' / 'journal.sqlite'}"
    old = os.umask(0o022)
    try:
        assert secure_sqlite_file(url) is None
        engine = make_engine(url, 1)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
        for name in os.listdir(tmp_path / "var"):
            assert mode(tmp_path / "var" / name) & 0o077 == 0, name
        engine.dispose()
    finally:
        os.umask(old)


def test_an_existing_world_readable_journal_is_made_owner_only(tmp_path):
    path = tmp_path / "journal.sqlite"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    assert secure_sqlite_file(f"sqlite:///{path}") == (str(path), 0o644)
    assert mode(path) == 0o600
    assert secure_sqlite_file(f"sqlite:///{path}") is None  # nothing to change now


def test_other_databases_are_left_alone():
    assert sqlite_path("postgresql+psycopg://postgres@127.0.0.1/billgw") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert secure_sqlite_file("sqlite:///:memory:") is None


def test_a_log_file_is_opened_owner_only_whatever_the_umask(tmp_path):
    from billgw.gateway.exposure import open_private

    path = tmp_path / "gateway.log"
    path.write_text("old\n")
    os.chmod(path, 0o644)
    with open_private(path) as f:
        f.write("new\n")
    assert mode(path) == 0o600 and path.read_text() == "new\n"
    with open_private(path, "a") as f:
        f.write("more\n")
    assert path.read_text() == "new\nmore\n"
