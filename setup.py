"""Packaging for billgw.

Our folders are installed under one namespace, ``billgw``: pyiso8583 imports as
``iso8583`` (the same name as our ``iso8583/`` folder), and generic names such
as ``gateway``, ``sms`` or ``conf`` must not land in site-packages.  Each
top-level folder is therefore mapped with ``package_dir`` to ``billgw.<folder>``.
"""
from setuptools import find_packages, setup

FOLDERS = ["gateway", "iso8583", "sms", "atm_sim", "billing_adapters", "conf"]


def _packages():
    packages = []
    package_dir = {}
    for folder in FOLDERS:
        name = "billgw." + folder
        packages.append(name)
        package_dir[name] = folder
        for sub in find_packages(where=folder):
            packages.append(name + "." + sub)
            package_dir[name + "." + sub] = folder + "/" + sub.replace(".", "/")
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

setup(
    name="billgw",
    version="0.1.0",
    description="ATM & SMS bill-payment gateway: ISO 8583 in, biller postings out, SMPP receipts",
    python_requires=">=3.11",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"billgw.conf": ["*.toml"], "billgw.gateway.migrations": ["*.ini", "*.mako"]},
    install_requires=[
        # [tls]: pyOpenSSL and service_identity for TLS on the ISO listener.
        "twisted[tls]>=24.3",
        # DES/3DES for the ISO 9797-1 retail MAC, X.509 names for peers by
        # certificate; already pulled in by pyOpenSSL, so no second crypto library.
        "cryptography>=42",
        "pyiso8583>=3.0",
        "smpplib>=2.2",
        "sqlalchemy>=2.0",
        "alembic>=1.13",
        "structlog>=24.1",
        # SOAP bodies from billers and ATM-side XML are parsed with defusedxml:
        # the stdlib parsers expand entities, which a hostile peer can abuse.
        "defusedxml>=0.7",
        # MSISDNs normalised to E.164 per country (Google's libphonenumber metadata).
        "phonenumbers>=8.13",
        # F48 names for peers that take ASCII only: Unicode transliterated to
        # ASCII (Arabic, accented Latin) by a maintained table, not our own.
        "anyascii>=0.3",
        # Business dates in the operator's timezone (zoneinfo) on machines
        # without a system time-zone database.
        "tzdata>=2024.1",
    ],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1"],
        "test": [
            "pytest>=8",
            "pytest-twisted>=1.14",
            "pytest-timeout>=2.3",
            "psycopg[binary]>=3.1",
            # Property-based tests: the SMS splitter (escape and surrogate pairs
            # never cut), the ISO codec and framing (tests/security), the
            # mainframe decimal codecs (zoned, COMP-3).
            "hypothesis>=6.100",
            # The bench's own tests merge histograms and draw its plots.
            "hdrhistogram>=0.10",
            "matplotlib>=3.7",
        ],
        # atm-sim bench / load --histogram: HDR latency histograms merged
        # across load processes, and the PNG plots.
        "bench": ["hdrhistogram>=0.10", "matplotlib>=3.7"],
    },
    entry_points={
        "console_scripts": [
            "billgw = billgw.gateway.cli:main",
            "atm-sim = billgw.atm_sim.cli:main",
        ]
    },
)
