# make demo: set-up + a real surface on the built-in data; make test: set-up + the whole suite.
PY      := .venv/bin/python
BIN     := .venv/bin
TORCH   ?= torch==2.13.0
DEMO    ?= runs/demo

.PHONY: install demo test test-fast cluster-up cluster-down bench bench-gpu clean

install: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(BIN)/pip install -q --upgrade pip
	@# CPU machines get the CPU build of torch (local wheel); a GPU machine may override TORCH=
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	touch $@

demo: install
	$(PY) -m launch.demo $(DEMO)

test: install
	bash tests/run.sh

test-fast: install
	$(BIN)/python -m pytest -q -m "not cluster"

cluster-up:
	bash cluster/up.sh

cluster-down:
	bash cluster/down.sh

# make bench: image-folder decoding (bench/decode.py), then the engine on CPU (a few minutes; last line
# "engine efficiency: ..."), JSON in bench/results/.
bench: install
	$(PY) -m bench.decode
	$(PY) -m bench.cpu

# make bench-gpu: one CUDA GPU, under 8 minutes; BENCH_PY= a python whose torch has CUDA (JSON to $$OUT or bench/results/).
BENCH_PY ?= $(PY)
bench-gpu:
	$(BENCH_PY) -m bench.gpu

clean:
	rm -rf runs .pytest_cache
