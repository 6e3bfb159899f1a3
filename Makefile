# Developer entry points. Each target installs what it needs into .venv first.
VENV ?= .venv
BIN   = $(VENV)/bin

.PHONY: install test demo bench clean

install:
	VENV=$(VENV) bash scripts/install.sh

# the whole test suite (fetches the registry models it needs into ~/.cache/falcon-edge on first use)
test: install
	$(BIN)/pytest

# chat with the default target, speculative vs plain decoding side by side
demo: install
	$(BIN)/falcon-edge demo

bench: install
	$(BIN)/falcon-edge bench

clean:
	rm -rf build $(VENV)
