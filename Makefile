# alzmri: two commands for a new user.
#   make demo   set up .venv (if needed), then run the end-to-end demo on embedded synthetic data
#   make test   set up .venv (if needed), then check the layering contract and run the test suite
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR ?= alzmri-demo

export MLFLOW_DISABLE_TELEMETRY := true
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test lint browser clean

setup: $(STAMP)

# torch first, pinned to the CPU build: anything that resolved torch itself would pull CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps -c constraints.txt "deepbet==1.0.2"
	@if $(BIN)/pip list 2>/dev/null | grep -qiE '^(nvidia-|triton )'; then \
		echo "error: CUDA packages were pulled into $(VENV); check pins" >&2; exit 1; fi
	@$(BIN)/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('2.13.0') else 'error: torch ' + v + ' installed, expected 2.13.0')"
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/alzmri demo $(DEMO_DIR)

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache

# The browser test drives Debian's Chromium through Playwright (Playwright's own browser download is not used).
browser:
	@if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium (Debian package) for the browser test"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || \
			{ apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1; } || \
			echo "warning: could not install chromium; the browser test will be skipped"; \
		else echo "note: no chromium found (sudo apt-get install chromium); the browser test will be skipped"; fi; \
	fi

test: $(STAMP) lint browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
