"""The water biller's configuration: the shipped example validates, a
misspelt column is named by ``billgw check-config`` before anything
starts, and ``billgw water-sim`` creates the tables and runs the batch."""
from __future__ import annotations

from importlib import resources

import pytest

from billgw.billing_adapters.water.sim import WaterBillerSim
from billgw.gateway import cli
from billgw.gateway.config import validate_adapters
from billgw.gateway.demo import settings_with_water


def test_the_example_water_biller_validates(tmp_path):
    settings = settings_with_water(None, f"sqlite:///{tmp_path / 'w.sqlite'}", environ={})
    validate_adapters(settings)
    wtr = settings.billers["WTR"]
    assert wtr.adapter == "water"
    assert wtr.adapter_settings["intake_columns"]["payment_id"] == "GW_PAY_REF"
    assert settings.recovery.accepted_expire_after == 259200.0


def test_check_config_names_a_misspelt_column(tmp_path, capsys):
    base = resources.files("billgw.conf").joinpath("billgw.toml").read_text("utf-8")
    example = resources.files("billgw.conf").joinpath("billers-water.example.toml").read_text("utf-8")
    bad = example.replace('amount = "PAY_AMT_FILS"', 'amout = "PAY_AMT_FILS"')
    assert bad != example
    path = tmp_path / "billgw.toml"
    path.write_text(base + "\n" + bad, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--config", str(path), "check-config"])
    assert exit_.value.code == 2
    assert "billers.WTR.settings.intake_columns.amout: unknown setting" in capsys.readouterr().err


def test_water_sim_cli_creates_the_tables_and_runs_the_batch(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'water.sqlite'}"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["water-sim", "--db", url, "--init", "--batch-now"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "WB_BILL" in out and "batch: 0 posted, 0 rejected" in out
    sim = WaterBillerSim(url)
    try:
        assert sim.intake_rows() == []
    finally:
        sim.close()
