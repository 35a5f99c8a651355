# sweeper: `make help` lists the targets. PYTHON is the interpreter of the active environment.
PYTHON ?= python
LOGDIR ?= $(shell ls -dt multirun/*/* outputs/*/* 2>/dev/null | head -1)
PORT ?= 6006
SEEDS ?= 1
TRIALS ?= 20
HALVING ?= false
SWEEP ?= $(shell ls -dt multirun/*/* 2>/dev/null | head -1)
DATA ?= $(HOME)/.cache/sweeper/cifar10
comma := ,
SEED_SWEEP = $(if $(filter-out 1,$(SEEDS)),'seed=range(0$(comma)$(SEEDS))')

.DEFAULT_GOAL := help
.PHONY: help install run smoke sweep sweep-fused sweep-optuna sweep-pbt summary test test-all bench bench-devices bench-slurm bench-pool bench-rows bench-model bench-quick lint format tensorboard clean

help:  ## show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-12s %s\n", $$1, $$2}'

# editable_mode=compat: Hydra finds plugins by listing the hydra_plugins folders, which setuptools'
# default (strict) editable install hides; compat puts the checkout itself on the path.
EDITABLE := --config-settings editable_mode=compat

install:  ## pip install -e '.[dev]' into the active Python environment
	$(PYTHON) -m pip install -e '.[dev]' $(EDITABLE)

run:  ## one run with the article's defaults (downloads CIFAR-10 once); ARGS="hidden=240 ..." to override
	$(PYTHON) run.py $(ARGS)

smoke:  ## a 300-step run on generated data: no download, seconds
	$(PYTHON) run.py data=synthetic max_steps=300 $(ARGS)

sweep:  ## the article's tuning grid, 27 jobs (SEEDS=3 repeats each config; ARGS="data.root=..." adds overrides)
	$(PYTHON) run.py -m sweep=article $(SEED_SWEEP) $(ARGS)

sweep-fused:  ## the same grid trained as vmapped programs (hydra/launcher=fused); HALVING=true prunes at each rung, HALVING=async as each run reaches one
	$(PYTHON) run.py -m sweep=article hydra/launcher=fused hydra.launcher.halving=$(HALVING) $(SEED_SWEEP) $(ARGS)

sweep-optuna:  ## Optuna TPE search with pruning (TRIALS=20); rerun with hydra.sweep.dir=... to continue a study
	$(PYTHON) run.py -m sweep=optuna hydra.sweeper.n_trials=$(TRIALS) $(ARGS)

sweep-pbt:  ## population-based training: 16 members over lr and reg as one vmapped program
	$(PYTHON) run.py -m sweep=pbt $(ARGS)

summary:  ## rewrite summary.csv/.md/.png of the latest sweep (SWEEP=multirun/DATE/TIME for another)
	@test -n "$(SWEEP)" || { echo "no sweeps yet: run 'make sweep' or set SWEEP=..."; exit 2; }
	$(PYTHON) -m sweeper.summary "$(SWEEP)"

test:  ## the fast tests, run before every change (no network; how long: README.md)
	$(PYTHON) -m pytest -q -m "not slow"

test-all:  ## every test, the slow ones too: real SLURM, signals, end-to-end sweeps (what CI runs)
	$(PYTHON) -m pytest -q

bench:  ## speed and memory against a plain PyTorch loop and the GEMM peak, then the benchmark's 27-config grid 3 ways -> benchmarks/RESULTS.md
	$(PYTHON) -m pip install -q -e '.[bench]' $(EDITABLE)
	$(PYTHON) benchmarks/bench.py $(ARGS)

bench-devices:  ## one fused program of 8 configs on 1 device and on 2 (forced host devices on a CPU) -> benchmarks/RESULTS-devices.md
	$(PYTHON) benchmarks/devices.py $(ARGS)

bench-slurm:  ## the 8-config fused grid in the sweep's process and as 2 SLURM jobs (a throwaway one-node SLURM, as root) -> benchmarks/RESULTS-slurm.md
	$(PYTHON) benchmarks/fused_slurm.py $(ARGS)

bench-pool:  ## the article's space on CIFAR-10 five ways: grid, Optuna one at a time, through the fused pool (its rows for the device, and 4), ASHA in pools (DATA=<CIFAR-10>) -> benchmarks/RESULTS-pool.md
	$(PYTHON) benchmarks/pool.py --data-root $(DATA) $(ARGS)

bench-rows:  ## how many members one program should hold on this machine: time per member-step for 1/2/4/8 rows of each width (printed)
	$(PYTHON) benchmarks/cpu_rows.py $(ARGS)

bench-model:  ## your own model: the example CNN's 8-config grid, basic launcher vs fused, on its generated data -> own-model section of benchmarks/RESULTS.md
	$(PYTHON) benchmarks/own_model.py $(ARGS)

bench-quick:  ## the benchmark harness in under a minute (nothing written)
	$(PYTHON) benchmarks/bench.py --quick $(ARGS)

lint:  ## ruff: lint and format check
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:  ## ruff: apply formatting and safe fixes
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

tensorboard:  ## serve the latest run or sweep (LOGDIR=... to choose, PORT=6006)
	@test -n "$(LOGDIR)" || { echo "no runs yet: run 'make run' or set LOGDIR=..."; exit 2; }
	$(PYTHON) -m tensorboard.main --logdir "$(LOGDIR)" --port $(PORT)

clean:  ## remove outputs/, multirun/ and caches (not the downloaded data)
	rm -rf outputs multirun .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
