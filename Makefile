# The README's two commands: `make demo` and `make test`.  Both build the
# virtual environment first, so a fresh machine needs only python3.11+, make
# and the package registries.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test venv clean bench

venv: $(STAMP)

$(STAMP): setup.py
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "billgw needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/billgw demo

# Runs from the repository root with the venv's pytest (never `python -m
# pytest`, which would put the root on sys.path and let our iso8583/ folder
# shadow pyiso8583).  BILLGW_TEST_PG_URL, when set, adds PostgreSQL runs.
test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) var build *.egg-info
