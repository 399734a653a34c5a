"""The chaos run's gateway configuration: the packaged ``conf/billgw.toml``
and the example biller tables, with the run's ports, journal, ledgers and
fast timers (text edits that keep every comment: tomllib cannot write).
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path


def set_toml(text: str, section: str, key: str, value, *, required: bool = True) -> str:
    """Replace ``key = ...`` inside ``[section]`` of a commented TOML file,
    keeping every comment (tomllib cannot write, and the packaged file is
    the one we want to run, comments and all).  A missing optional section
    or key leaves the text as it is."""
    literal = json.dumps(value) if isinstance(value, str) else (
        ("true" if value else "false") if isinstance(value, bool) else repr(value))
    lines = text.split("\n")
    inside = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            inside = stripped == f"[{section}]"
            continue
        if inside and re.match(rf"^{re.escape(key)}\s*=", stripped):
            comment = ""
            match = re.search(r"\s+#.*$", line)
            if match and '"' not in line[match.start():]:
                comment = match.group(0)
            lines[i] = f"{key} = {literal}{comment}"
            return "\n".join(lines)
    if required:
        raise KeyError(f"[{section}] {key} not found in the packaged configuration")
    return text


def water_biller_tables(biller_timeout: float) -> str:
    """The example water biller (conf/billers-water.example.toml), its
    database named by BILLGW_WATER_DB_URL, timed like the telecom biller."""
    text = resources.files("billgw.conf").joinpath("billers-water.example.toml").read_text("utf-8")
    # The load accounts are numbered like mobiles (see test_chaos.py).
    text = set_toml(text, "billers.WTR.services.WATER", "billing_number_pattern", "^(3[0-9]{9}|078[0-9]{7})$")
    return set_toml(text, "billers.WTR", "timeout", biller_timeout)


@dataclass(frozen=True)
class ElectricityHost:
    """Where the chaos run's electricity host simulator listens, and its ledger."""

    port: int
    ledger: Path
    password: str


def without_tables(text: str, header: str) -> str:
    """``text`` without every ``header`` table (an array of tables such as
    ``[[billers.ELE.maintenance]]``), each up to the next table header."""
    out, skipping = [], False
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("["):
            skipping = stripped == header
        if not skipping:
            out.append(line)
    return "\n".join(out)


def only_biller(text: str, code: str) -> str:
    """The tables of biller ``code`` of an example file holding several
    (the lines before the first table, comments, are kept)."""
    out, keeping = [], True
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("["):
            keeping = stripped.strip("[]").split(".")[:2] == ["billers", code]
        if keeping:
            out.append(line)
    return "\n".join(out)


def json_biller_tables(port: int, biller_timeout: float) -> str:
    """The example's first JSON biller (WAT, conf/billers-json.example.toml:
    a biller added by configuration alone) on the chaos run's simulator,
    timed like the other billers, without its maintenance window."""
    text = resources.files("billgw.conf").joinpath("billers-json.example.toml").read_text("utf-8")
    text = without_tables(only_biller(text, "WAT"), "[[billers.WAT.maintenance]]")
    text = set_toml(text, "billers.WAT", "timeout", biller_timeout)
    text = set_toml(text, "billers.WAT.settings", "url", f"http://127.0.0.1:{port}/api/v1")
    return set_toml(text, "billers.WAT.settings", "request_timeout", biller_timeout - 0.5)


def electricity_biller_tables(host: ElectricityHost, biller_timeout: float) -> str:
    """The example electricity biller (conf/billers-electricity.example.toml)
    on the chaos run's host simulator, timed like the other billers: a
    request unanswered within the biller timeout is in doubt, the link comes
    back within a second or two of a restart, and no maintenance window (the
    run may fall at any hour, 00:00-00:20 UTC included)."""
    text = resources.files("billgw.conf").joinpath("billers-electricity.example.toml").read_text("utf-8")
    text = without_tables(text, "[[billers.ELE.maintenance]]")
    text = set_toml(text, "billers.ELE", "timeout", biller_timeout)
    for key, value in (("port", host.port), ("password", host.password), ("ledger", str(host.ledger)),
                       ("connect_timeout", 2.0), ("request_timeout", biller_timeout - 0.5),
                       ("reconnect_initial", 0.3), ("reconnect_max", 2.0)):
        text = set_toml(text, "billers.ELE.settings", key, value)
    # The load accounts are numbered like mobiles (see test_chaos.py).
    return set_toml(text, "billers.ELE.services.HOME", "billing_number_pattern", "^(2[0-9]{9}|078[0-9]{7})$")


def write_gateway_config(path: Path, *, port: int, db_url: str, telecom_port: int, smsc_port: int,
                         biller_timeout: float, water: bool = False, electricity: ElectricityHost | None = None,
                         json_port: int | None = None, acquirers: tuple[str, ...] = ()) -> dict:
    """The packaged conf/billgw.toml with our ports, journal and fast timers.

    Timers are shortened so a crashed gateway's leases expire within the
    test's bounds; each stays consistent with the rules the configuration
    enforces (leases longer than the biller timeout, and so on)."""
    text = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
    text = set_toml(text, "gateway", "listen", f"tcp:{port}:interface=127.0.0.1")
    text = set_toml(text, "database", "url", db_url)
    text = set_toml(text, "logging", "format", "json")
    text = set_toml(text, "logging", "level", "info")
    text = set_toml(text, "sms", "host", "127.0.0.1")
    text = set_toml(text, "sms", "port", smsc_port)
    text = set_toml(text, "sms", "poll_interval", 0.3)
    text = set_toml(text, "sms", "submit_timeout", 3.0)
    text = set_toml(text, "sms", "lease_seconds", 6.0)
    text = set_toml(text, "sms", "retry_base", 0.5)
    text = set_toml(text, "sms", "retry_cap", 3.0)
    text = set_toml(text, "sms", "enquire_link_interval", 10.0)
    # check_sms finds each SMS's payment by the receipt number and the full
    # payment id: templates that carry both (the packaged ones are one part
    # and show only the 10-character short reference).
    receipt = "Paid {amount} {currency_code} to {biller_name}. Receipt {receipt_number}, ref {reference}."
    notice = "Your payment of {amount} {currency_code} was reversed. Ref {reference}."
    for section, template in (("sms.templates.receipt", receipt), ("sms.templates.receipt.TEL", receipt),
                              ("sms.templates.reversal", notice), ("sms.templates.reversal.TEL", notice)):
        for language in ("en", "ar", "el"):
            # (the telecom's own tables lack some languages: the generic ones serve)
            text = set_toml(text, section, language, template, required=not section.endswith("TEL"))
    text = set_toml(text, "billers.TEL", "timeout", biller_timeout)
    text = set_toml(text, "billers.TEL.settings", "url", f"http://127.0.0.1:{telecom_port}/BillingService")
    recovery = {"poll_interval": 0.3, "lease_seconds": biller_timeout + 3.0, "retry_base": 0.5,
                "retry_cap": 3.0, "stale_after": biller_timeout + 6.0,
                # the switch advises or reverses within ~3 s of a timeout: let it decide first
                "status_delay": 5.0,
                # the water biller's batch runs every second: poll for it often
                "accepted_poll_delay": 0.5}
    for key, value in recovery.items():
        text = set_toml(text, "recovery", key, value, required=False)
    if acquirers:
        text = set_toml(text, "peers.local", "acquirers", list(acquirers))
    if water:
        text += "\n" + water_biller_tables(biller_timeout)
    if electricity is not None:
        text += "\n" + electricity_biller_tables(electricity, biller_timeout)
    if json_port is not None:
        text += "\n" + json_biller_tables(json_port, biller_timeout)
    path.write_text(text, encoding="utf-8")
    return tomllib.loads(text)  # proves it still parses
