# Two entry points: `make train` (the main job) and `make test`.
# Both create .venv on first use and install what they need into it.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: train test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# A torch already in the venv is kept (a GPU user's own build). Otherwise CPU machines get
	# torch's CPU build (the default PyPI wheel is the multi-GB CUDA one) and a machine with
	# nvidia-smi gets the default CUDA build.
	if $(PY) -c "import torch" 2>/dev/null; then \
		echo "keeping the installed torch"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	else \
		$(PY) -m pip install "torch==$(TORCH_VERSION)+cpu" || \
		$(PY) -m pip install "torch==$(TORCH_VERSION)" --index-url https://download.pytorch.org/whl/cpu; \
	fi
	$(PY) -m pip install -e ".[test]"
	touch $@

# The digits run's recipe on top of scripts/train.py's defaults (README, "Train"): a high-SNR prefix of 50
# steps before the linear schedule, Fourier features 4-6 of x_t, 4,000 steps; measured in
# benchmarks/schedule_end_digits.py. `make train TRAIN_FLAGS=` trains the paper's DDPM instead.
TRAIN_FLAGS ?= --log_snr_max 13 --log_snr_prefix_steps 50 --fourier_features 4 5 6 --max_train_steps 4000

train: $(VENV)/.installed
	$(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no scripts/train.py $(TRAIN_FLAGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV)

bench: $(VENV)/.installed
	$(PY) benchmarks/run.py
