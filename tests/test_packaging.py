"""The installed package and the layering of its folders.

pyiso8583 imports as ``iso8583``, the name of our own ``iso8583/`` folder, so
setup.py installs every folder under ``billgw.`` and nothing generic lands in
site-packages.  If that mapping breaks, ``import iso8583`` inside the gateway
silently becomes our folder (or ``import gateway`` starts to work from some
directories and not from others) -- these tests catch it.

The layering tests read the source with ``ast`` (no import side effects):
the codec stays pure, the adapters / SMS / ATM simulator stay below the
gateway, and only the composition root may touch the global reactor.
"""
import ast
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import billgw.iso8583

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FOLDERS = ("gateway", "iso8583", "sms", "atm_sim", "billing_adapters", "conf")
GENERIC_NAMES = ("gateway", "sms", "conf", "atm_sim", "billing_adapters")


def _probe(tmp_path, code: str) -> dict:
    """Run ``code`` in the venv's interpreter from an empty directory (so the
    repository root is not on sys.path, as for an installed command); it
    prints one JSON object."""
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         timeout=30, check=True)
    return json.loads(out.stdout)


def test_iso8583_is_pyiso8583_and_billgw_iso8583_is_our_folder(tmp_path):
    found = _probe(tmp_path, """if True:
        import json, sys
        import billgw.iso8583.messages  # our codec imports "iso8583": which one did it get?
        imported_by_codec = sys.modules["iso8583"].__file__
        import iso8583, iso8583.specs, billgw.iso8583
        print(json.dumps({
            "iso8583": iso8583.__file__,
            "api": [callable(iso8583.decode), callable(iso8583.encode), hasattr(iso8583.specs, "default")],
            "ours": billgw.iso8583.__file__,
            "imported_by_codec": imported_by_codec,
        }))""")
    assert "site-packages" in found["iso8583"] and not found["iso8583"].startswith(str(REPO / "iso8583"))
    assert found["api"] == [True, True, True]
    assert found["imported_by_codec"] == found["iso8583"]
    assert Path(found["ours"]) == REPO / "iso8583" / "__init__.py"


def test_iso8583_in_this_test_process_is_the_library_too():
    """pytest puts tests/ on sys.path, where tests/iso8583/ could shadow it."""
    import iso8583
    import iso8583.specs

    assert callable(iso8583.decode) and callable(iso8583.encode) and hasattr(iso8583.specs, "default")
    assert "site-packages" in iso8583.__file__ and not iso8583.__file__.startswith(str(REPO / "iso8583"))
    assert Path(billgw.iso8583.__file__).parent == REPO / "iso8583"


def test_no_generic_top_level_names_are_installed(tmp_path):
    found = _probe(tmp_path, f"""if True:
        import importlib.util, json
        print(json.dumps({{n: importlib.util.find_spec(n) is not None for n in {list(GENERIC_NAMES)!r}}}))""")
    assert found == {name: False for name in GENERIC_NAMES}


def test_every_folder_is_importable_under_billgw(tmp_path):
    found = _probe(tmp_path, f"""if True:
        import importlib, json, os
        print(json.dumps({{n: os.path.dirname(importlib.import_module("billgw." + n).__file__)
                           for n in {list(FOLDERS)!r}}}))""")
    assert found == {name: str(REPO / name) for name in FOLDERS}


def test_console_scripts_are_installed():
    for script in ("billgw", "atm-sim"):
        path = BIN / script
        assert path.is_file(), path
        head = path.read_text(encoding="utf-8", errors="replace")
        assert head.startswith("#!") and str(BIN / "python") in head.splitlines()[0]


# -- layering -------------------------------------------------------------------

def _modules(folder: str) -> list[Path]:
    found = sorted((REPO / folder).rglob("*.py"))
    assert found, folder
    return found


def _imports(path: Path) -> set[str]:
    """Absolute names of every module imported by ``path`` (relative imports
    resolved against its ``billgw.<folder>...`` package), with
    ``from a import b`` also yielding ``a.b``."""
    rel = path.relative_to(REPO).with_suffix("")
    package = ["billgw", *rel.parts[:-1]]  # the same for a module and for its folder's __init__
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: list[str]) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def _offenders(folders, forbidden) -> list[tuple[str, str]]:
    return sorted(
        (str(path.relative_to(REPO)), name)
        for folder in folders
        for path in _modules(folder)
        for name in _imports(path)
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_import_scanner_sees_relative_and_nested_imports():
    """The scanner must not miss what the layering tests look for."""
    probe = REPO / "gateway" / "service.py"
    names = _imports(probe)
    assert "billgw.gateway.config.ConfigError" in names  # from .config import ConfigError
    assert "twisted.internet.endpoints.serverFromString" in names
    cli = _imports(REPO / "gateway" / "cli.py")
    assert "billgw.gateway.service.GatewayService" in cli  # imported inside a function
    snippet = ("def f():\n    from twisted.internet import reactor\n"
               "from ..gateway import db\nimport twisted.internet.reactor\n")
    assert {"twisted.internet.reactor", "billgw.gateway.db"} <= _imports_in(snippet, ["billgw", "sms"])


def test_iso8583_is_a_pure_codec():
    assert _offenders(["iso8583"], ["twisted", "sqlalchemy", "billgw.gateway", "smpplib", "socket"]) == []


def test_adapters_sms_and_atm_sim_stay_below_the_gateway():
    assert _offenders(["billing_adapters", "sms", "atm_sim"], ["billgw.gateway"]) == []


def test_atm_sim_speaks_only_the_wire():
    """The ATM simulator may use the dialect (billgw.iso8583), never the
    gateway's internals nor the biller / SMS code: what it proves about the
    gateway it must prove over the socket."""
    assert _offenders(["atm_sim"], ["billgw.gateway", "billgw.billing_adapters", "billgw.sms"]) == []


def composition_roots() -> set[str]:
    """The modules our console scripts start in (``billgw`` ->
    gateway/cli.py, ``atm-sim`` -> atm_sim/cli.py): the only places that may
    pick the reactor, everything below gets it as an argument."""
    roots = set()
    for ep in importlib.metadata.distribution("billgw").entry_points:
        if ep.group == "console_scripts":
            folder_and_module = ep.module.split(".")[1:]  # billgw.<folder>.<module>
            roots.add("/".join(folder_and_module) + ".py")
    return roots


def test_only_the_composition_roots_import_the_global_reactor():
    roots = composition_roots()
    assert "gateway/cli.py" in roots
    offenders = [(path, name) for path, name in _offenders(FOLDERS, ["twisted.internet.reactor"])
                 if path not in roots]
    assert offenders == []
