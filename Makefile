# The README's two commands: `make demo` and `make test`.  Both build the
# virtual environment first, so a fresh machine needs only python3.11+, make
# and the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean bench bench-quick bench-soak docs

venv: $(STAMP)

NPM_SMSC := tests/integration/npm_smsc

$(STAMP): setup.py $(NPM_SMSC)/package-lock.json
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "billgw needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	# The independent SMSC of tests/integration/test_npm_smsc.py (the npm
	# smpp package), pinned by its package-lock.json; without node those
	# tests are skipped and say why.
	if command -v node >/dev/null && command -v npm >/dev/null; then \
		cd $(NPM_SMSC) && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "node/npm not found: the npm SMSC tests will be skipped"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/billgw demo

# Runs from the repository root with the venv's pytest (never `python -m
# pytest`, which would put the root on sys.path and let our iso8583/ folder
# shadow pyiso8583).  BILLGW_TEST_PG_URL, when set, adds PostgreSQL runs.
test: $(STAMP)
	$(BIN)/pytest

# Rewrites the generated examples region of the interface document from the
# codec.  `python -m` runs from /tmp: from the repository root our iso8583/
# folder would shadow pyiso8583.
docs: $(STAMP)
	cd /tmp && $(abspath $(BIN))/python -m billgw.iso8583.examples $(abspath docs/iso8583-interface.md)

# Throughput as a ratio of a minimal server's, measured in one run (the
# load generator in processes of its own; figures printed, written as JSON
# and drawn as PNG plots beside it, never asserted).  BILLGW_BENCH_PG_URL, when set, adds a PostgreSQL row
# (the bench wipes that database).
bench-quick: $(STAMP)
	cd /tmp && $(abspath $(BIN))/atm-sim bench --quick --report $(abspath var/bench/quick.json) --workdir $(abspath var/bench/quick)

bench: $(STAMP)
	cd /tmp && $(abspath $(BIN))/atm-sim bench --report $(abspath var/bench/full.json) --workdir $(abspath var/bench/full)

# The gateway's resident memory under a steady load for 10 minutes (not in
# CI): RSS samples and the growth after warm-up.
bench-soak: $(STAMP)
	cd /tmp && $(abspath $(BIN))/atm-sim bench --soak 600 --report $(abspath var/bench/soak.json) --workdir $(abspath var/bench/soak)

clean:
	rm -rf $(VENV) var build *.egg-info $(NPM_SMSC)/node_modules
