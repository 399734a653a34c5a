"""sms/ stays below the gateway: it never imports billgw.gateway (the gateway
injects run_in_db and the link) nor the global reactor (time is injected)."""
import ast
import pathlib

import billgw.sms

SMS_DIR = pathlib.Path(billgw.sms.__file__).parent


def imports(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            yield module
            for alias in node.names:
                yield f"{module}.{alias.name}"


def test_sms_modules_import_neither_gateway_nor_global_reactor():
    modules = sorted(SMS_DIR.glob("*.py"))
    assert {m.name for m in modules} >= {"templates.py", "encoding.py", "smpp_link.py", "sender.py", "smsc_sim.py"}
    offenders = [
        (m.name, name)
        for m in modules
        for name in imports(m)
        if name.startswith(("billgw.gateway", "gateway")) or name == "twisted.internet.reactor"
    ]
    assert offenders == []
