# Two commands for a fresh machine (see README.md): `make demo` and `make test`.
# Both create the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DATA := data/synthetic
DEMO_MODEL := runs/demo

.PHONY: demo test test-fast test-deps venv clean-demo

$(VENV)/installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

venv: $(VENV)/installed

# Generates the embedded dataset (seconds), trains the demo model, evaluates it.
demo: venv
	$(PY) -m daml_tf.data.synthetic --output_dir=$(DEMO_DATA) --overwrite
	$(PY) -m daml_tf.train --flagfile=configs/demo.cfg --data_dir=$(DEMO_DATA) --model_dir=$(DEMO_MODEL)
	$(PY) -m daml_tf.evaluate --flagfile=configs/demo.cfg --data_dir=$(DEMO_DATA) --model_dir=$(DEMO_MODEL)

# What tests need from the OS, installed only when missing (a fresh machine, as root): the
# mosquitto broker of tests/test_mqtt.py (and mosquitto_sub, for people). Without it those tests
# are skipped, so a failed install only warns.
test-deps:
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients; } || \
	  echo "warning: could not install mosquitto; tests/test_mqtt.py will skip its broker tests"

# Every test, the slow ones included: this is what CI runs.
test: venv test-deps
	$(PY) -m pytest -m "slow or not slow" -q

# The fast tests only (a few minutes), for development.
test-fast: venv test-deps
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_MODEL)
