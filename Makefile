# Developer entry points. Each target installs what it needs into .venv first.
VENV ?= .venv
BIN   = $(VENV)/bin

.PHONY: install test demo bench bench-peers clean test-sanitize fuzz longrun

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

# every peer method on the Q4_K_M target, its F16 re-export and SmolLM2 (builds llama.cpp's tools once), then
# docs/benchmarks.md; about 40 minutes on 2 idle cores
PEERS = $(BIN)/falcon-edge bench --suite peers --n-prompts 3 -n 96 -t 2
bench-peers: install
	bash bench/build_llama_tools.sh && bash bench/export_variants.sh
	$(PEERS) -m qwen2.5-coder-1.5b-instruct
	$(PEERS) -m $$(dirname $$($(BIN)/falcon-edge models path qwen2.5-coder-1.5b-instruct))/qwen2.5-coder-1.5b-instruct-f16.gguf
	$(PEERS) -m smollm2-135m-instruct

# hardening (docs/reliability.md), slower jobs outside `make test`:
# the native-code tiers against an ASan + UBSan + LSan build of the engine in build/sanitize (the venv is untouched)
test-sanitize: install
	VENV=$(VENV) bash scripts/test-sanitize.sh

# atheris fuzzing of the drafter GGUF loader, the dataset readers and the server, FUZZ_SECONDS per target
FUZZ_SECONDS ?= 60
fuzz: install
	$(BIN)/pip install -q atheris
	VENV=$(VENV) FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

# 1,000 speculative generations in one process on SmolLM2-135M; RSS curve in bench/results/longrun.json
# (run from /tmp: the source tree must not shadow the installed package)
longrun: install
	cd /tmp && FALCON_EDGE_DATA=$${FALCON_EDGE_DATA:-$(CURDIR)/../shared/data} \
		$(abspath $(BIN))/python $(CURDIR)/scripts/longrun.py --out $(CURDIR)/bench/results/longrun.json

clean:
	rm -rf build $(VENV)
