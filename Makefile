# Two commands set everything up on a fresh machine: `make test` and `make demo`.
# Both create .venv when missing (CPU build of torch from the local wheel, then the project in editable mode).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo demo-data ui env clean-env benchmarks transfer-demo

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned resolve would pull several GB of CUDA wheels
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 tests

# The main job: a 4-seed ensemble on the shipped demo data, the self-consistency selection (printed; the 4
# best-ranked networks when none passes the 1e-4 test, as the demo is too small for it: experiment=demo), which
# registers the ensemble in the MLflow Model Registry (tglassmlp_demo.ensemble, alias 'selected'); predict.py
# reads it from there and predicts every demo structure, then analyze.py: dynamic-heterogeneity tables and the paper's figures that the demo data
# support (outputs/analysis/demo). The predictions also go to one GSD file for OVITO
# (outputs/predictions/tglassmlp_demo/demo.gsd: propensity and its spread per level as particle properties).
# It ends with the sweep's table (per seed: held-out Pearson, label ceiling rho_max, selected), the paths and the
# link to the MLflow runs table (tglassmlp.ensemble.report).
# Without data/demo (a partial checkout) it runs the physics demo on the GlassBench structure instead.
demo: $(STAMP)
	@if ls data/demo/T*/s*.h5 >/dev/null 2>&1; then \
		$(BIN)/python train.py -m experiment=demo seed=0..3 launcher=joblib && \
		$(BIN)/python predict.py ensemble_source=registry ensemble_source.name=tglassmlp_demo.ensemble \
			structures=data/demo 'levels=[0.95,0.9,0.8,0.7,0.65,0.6,0.5]' overwrite=true && \
		$(BIN)/python -m tglassmlp.predict.gsd_export outputs/predictions/tglassmlp_demo/demo.gsd \
			outputs/predictions/tglassmlp_demo/*.pred.h5 && \
		$(BIN)/python analyze.py predictions=files && \
		$(BIN)/python -m tglassmlp.ensemble.report --path predictions=outputs/predictions/tglassmlp_demo \
			--path OVITO=outputs/predictions/tglassmlp_demo/demo.gsd --path analysis=outputs/analysis/demo; \
	else \
		echo "data/demo not found: running the physics demo instead (make demo-data generates the dataset)"; \
		$(BIN)/python simulate.py; \
	fi

# Regenerates data/demo (about 1.5 hours on 2 cores with two such processes, structures split between
# them; finished stages are skipped on a rerun).
DEMO_T := 0.6,0.5,0.45,0.4,0.35
DEMO_STRUCTURES := range(0,4)
demo-data: $(STAMP)
	$(BIN)/python simulate.py -m simulation_dataset=demo structure=null temperature=$(DEMO_T) structure_index='$(DEMO_STRUCTURES)'
	$(BIN)/python -m tglassmlp.data.export outputs/datasets/demo data/demo

# The two-step transfer on the demo data plus the baselines of docs/demo/transfer_comparison.md (~10 min on
# 2 cores; resumable: a rerun skips finished networks)
transfer-demo: $(STAMP)
	$(BIN)/python transfer.py

# The MLflow UI on the default tracking store: experiments <study>/train, <study>/predict, <study>/analyze; open
# the link that train.py (and make demo) print at the end: the runs table with the columns that compare networks
ui: $(STAMP)
	@echo "MLflow UI: open the link printed at the end of train.py / make demo (http://127.0.0.1:5000/#/experiments/<id>/runs?viewStateShareKey=tglassmlp)"
	$(BIN)/mlflow ui --backend-store-uri sqlite:///outputs/mlflow.db --host 127.0.0.1 --port 5000

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/md_throughput.py
	$(BIN)/python benchmarks/swap_mc.py

clean-env:
	rm -rf $(VENV)
