"""Import rules of billing_adapters/: it must not depend on the gateway (the
gateway depends on it), and library code takes its reactor as an argument."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import billgw.billing_adapters

ROOT = Path(billgw.billing_adapters.__path__[0])
SOURCES = sorted(ROOT.rglob("*.py"))


def imported_names(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_sources_found():
    assert {str(p.relative_to(ROOT)) for p in SOURCES} >= {
        "interface.py", "telecom_soap.py", "telecom_sim.py", "registry.py", "guarded.py", "transports/http.py",
        "json_biller/adapter.py", "json_biller/sim.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_gateway_and_no_global_reactor(path):
    names = imported_names(path)
    assert not [n for n in names if n.startswith(("billgw.gateway", "gateway"))]
    assert "twisted.internet.reactor" not in names
