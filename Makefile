# The two commands of the README: `make demo` and `make test`. Both set up first.
PY := .venv/bin/python
DATA := data
WHOLE_32PX := --resolution=32 --ratio=1

.PHONY: setup demo smoke test bench clean

setup:
	@bash tools/setup.sh

# Main job: write the Fashion-MNIST default (train + val) and read it back through an FFCV loader.
demo: setup
	$(PY) write_dataset.py --data.out_dir=$(DATA)
	$(PY) -m fkd_ffcv.inspect $(DATA)/fashion_mnist_train.beton --read $(WHOLE_32PX)
	$(PY) -m fkd_ffcv.inspect $(DATA)/fashion_mnist_val.beton --read $(WHOLE_32PX)

# The demo path on a small subset (CI runs this next to the tests).
smoke: setup
	$(PY) write_dataset.py --data.out_dir=build/smoke --data.subset=2000
	$(PY) -m fkd_ffcv.inspect build/smoke/fashion_mnist_train.beton --read $(WHOLE_32PX)

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/writer.py
	$(PY) benchmarks/labeling.py
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/loss.py
	$(PY) benchmarks/timing_table.py

clean:
	rm -rf build $(DATA) .pytest_cache
