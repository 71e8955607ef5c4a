# The two commands of the README: `make demo` and `make test`. Both set up first.
PY := .venv/bin/python
DATA := data
WHOLE_32PX := --resolution=32 --ratio=1

.PHONY: setup check demo smoke test bench clean

setup:
	@bash tools/setup.sh

# Main job: the FKD life cycle on a Fashion-MNIST subset (fkd_ffcv/commands/demo.py): write the betons,
# train a teacher, label crops with it, train FKD / online-KD / plain students, print the table.
demo: setup
	$(PY) -m fkd_ffcv.commands.demo

# The same path, small (CI runs this next to the tests), through the installed commands
# (.venv has the package installed in place), and the checkout's writing script.
smoke: setup
	.venv/bin/fkd-demo --smoke
	$(PY) write_dataset.py --data.out_dir=build/smoke --data.subset=2000 --overwrite
	.venv/bin/fkd-inspect build/smoke/fashion_mnist_train.beton --read $(WHOLE_32PX)

# Imports point down the layers, no circles, the option modules torch-free (standard library only,
# so it needs no set-up; docs/architecture.md). tests/test_architecture.py runs it too.
check:
	python3 tools/check_imports.py

# One pytest-xdist worker per core (8 at most), each module's tests on one worker (tests/conftest.py groups
# them); PYTEST_ARGS= runs it serially. Times in docs/testing.md.
TEST_WORKERS ?= $(shell n=$$(nproc); echo $$((n < 8 ? n : 8)))
PYTEST_ARGS ?= -n $(TEST_WORKERS) --dist loadgroup
test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS) tests

# The benchmarks are modules of the benchmarks package (docs/benchmarks.md); run from here.
bench: setup
	$(PY) -m benchmarks.writer
	$(PY) -m benchmarks.labeling
	$(PY) -m benchmarks.loader
	$(PY) -m benchmarks.resize
	$(PY) -m benchmarks.loss
	$(PY) -m benchmarks.timing_table --out docs/tables

clean:
	rm -rf build $(DATA) .pytest_cache
