"""The installed ``billgw`` command, run as an operator runs it: a separate
process started from some other directory.

What matters to an operator: a bad configuration stops the command at once
with exit status 2 and a one-line message naming the key (not a traceback),
``check-config`` says OK for a good file, and ``db upgrade`` creates the
journal's schema on a fresh database.
"""
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

pytestmark = pytest.mark.timeout(120)

BILLGW = str(Path(sys.executable).with_name("billgw"))
JOURNAL_TABLES = {"transactions", "transaction_events", "sms_outbox", "reversals", "biller_outbox",
                  "alembic_version"}


def packaged_config() -> str:
    return resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")


def write_config(tmp_path: Path, text: str, name: str = "billgw.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def billgw(tmp_path: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the console script from ``tmp_path`` (so relative paths such as
    the default ``var/billgw.sqlite`` land there, never in the repository)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BILLGW_")}
    return subprocess.run([BILLGW, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def with_journal(text: str, url: str) -> str:
    old = 'url = "sqlite:///var/billgw.sqlite"'
    assert old in text
    return text.replace(old, f'url = "{url}"')


def test_check_config_names_an_unknown_key_and_exits_2(tmp_path):
    text = packaged_config()
    assert '\nlisten = "tcp:8583' in text
    bad = write_config(tmp_path, text.replace('\nlisten = "tcp:8583', '\nlisen = "tcp:8583', 1), "bad.toml")
    result = billgw(tmp_path, "--config", str(bad), "check-config")
    assert result.returncode == 2, result
    assert "gateway.lisen: unknown key" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_check_config_names_a_wrong_type(tmp_path):
    text = packaged_config()
    assert "\ntimeout = 10.0" in text  # the biller's own timeout, not sms.submit_timeout
    bad = write_config(tmp_path, text.replace("\ntimeout = 10.0", '\ntimeout = "ten"', 1))
    result = billgw(tmp_path, "--config", str(bad), "check-config")
    assert result.returncode == 2
    assert "billers.TEL.timeout: expected float" in result.stderr and "Traceback" not in result.stderr


def test_check_config_of_a_missing_file_exits_2(tmp_path):
    result = billgw(tmp_path, "--config", str(tmp_path / "nowhere.toml"), "check-config")
    assert result.returncode == 2
    assert "cannot read configuration" in result.stderr and "nowhere.toml" in result.stderr


def test_check_config_accepts_a_good_file(tmp_path):
    good = write_config(tmp_path, packaged_config())
    result = billgw(tmp_path, "--config", str(good), "check-config")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{good}: OK (1 biller(s))"


def test_db_upgrade_creates_the_journal_tables_on_a_fresh_sqlite_file(tmp_path):
    # A relative path in a directory that does not exist yet, as on a fresh machine.
    cfg = write_config(tmp_path, with_journal(packaged_config(), "sqlite:///data/journal.sqlite"))
    result = billgw(tmp_path, "--config", str(cfg), "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "journal schema is up to date" in result.stdout
    db = tmp_path / "data" / "journal.sqlite"
    engine = create_engine(f"sqlite:///{db}")
    try:
        inspector = inspect(engine)
        assert JOURNAL_TABLES <= set(inspector.get_table_names())
        uniques = {u["name"] for u in inspector.get_unique_constraints("transactions")}
        assert "uq_transactions_acquirer_keys" in uniques  # duplicate detection rests on it
    finally:
        engine.dispose()
    # Running it again is harmless (an operator will).
    again = billgw(tmp_path, "--config", str(cfg), "db", "upgrade")
    assert again.returncode == 0, again.stderr


def test_serve_with_an_unknown_adapter_kind_fails_naming_the_biller(tmp_path):
    text = packaged_config()
    assert 'adapter = "telecom_soap"' in text
    text = with_journal(text.replace('adapter = "telecom_soap"', 'adapter = "carrier_pigeon"', 1),
                        "sqlite:///var/journal.sqlite")
    cfg = write_config(tmp_path, text)
    # If it did start, it must not hang the test: --listen on a free port and a bounded wait.
    result = billgw(tmp_path, "--config", str(cfg), "serve", "--listen", "tcp:0:interface=127.0.0.1",
                    timeout=60)
    assert result.returncode != 0
    output = result.stderr + result.stdout
    assert "billers.TEL" in output and "carrier_pigeon" in output
    assert "Traceback" not in output
