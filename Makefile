# Two entry points on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
DEMO := results

.PHONY: demo test venv lint clean-demo

# The venv is rebuilt when the project's dependencies change.
$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e ".[ml,workflow,test,export]"
	@touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/snakemake --profile profiles/default --configfile config/demo/config.yaml --cores $(CORES)
	$(BIN)/snakemake --profile profiles/default --configfile config/demo/config.yaml --cores $(CORES) --report results/report.html
	@echo
	@echo "Report:          $(CURDIR)/results/report.html"
	@echo "Metrics table:   $(CURDIR)/results/report/metrics.tsv"
	@echo "Restored slide:  $(CURDIR)/results/restore/slides/demo_slide.ome.zarr"
	@echo "Restored FOVs:   $(CURDIR)/results/restore/fov/"

test: venv
	$(BIN)/python -m pytest

lint: venv
	$(BIN)/snakemake --lint --configfile config/demo/config.yaml

clean-demo:
	rm -rf results logs benchmarks/*/ .snakemake
