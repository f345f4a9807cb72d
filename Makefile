# Two commands for a fresh machine (see README.md): `make demo` and `make test`.
# Both create the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DATA := data/synthetic
DEMO_MODEL := runs/demo

# What the live-stream tests start as servers on 127.0.0.1 (tests/test_sources.py): the ffmpeg
# CLI (MPEG-TS over UDP and HTTP) and GStreamer's RTSP server, run by the system Python.
STREAM_TEST_PACKAGES := ffmpeg python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base \
	gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
# The page's browser test (tests/test_serve_http.py): headless Chromium driven by selenium
# through Debian's chromedriver.
BROWSER_TEST_PACKAGES := chromium chromium-driver
GST_CHECK := import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); \
	from gi.repository import Gst, GstRtspServer; Gst.init(None); \
	assert all(map(Gst.ElementFactory.find, ('tsdemux', 'h264parse', 'rtph264pay')))

.PHONY: demo test test-fast test-experiments test-deps venv clean-demo

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
# mosquitto broker of the MQTT tests (and mosquitto_sub, for people), the live-stream servers
# above, then Chromium and its driver for the page's browser test (Debian's apt-get). Not root:
# the missing packages are named and the tests that need them skip with that reason (CI=true
# turns those skips into failures, tests/conftest.py).
test-deps:
	@if [ "$$(id -u)" != 0 ]; then \
	  missing=""; \
	  command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || missing="$$missing mosquitto mosquitto-clients"; \
	  { command -v ffmpeg >/dev/null 2>&1 && /usr/bin/python3 -c "$(GST_CHECK)" >/dev/null 2>&1; } || missing="$$missing $(STREAM_TEST_PACKAGES)"; \
	  { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || missing="$$missing $(BROWSER_TEST_PACKAGES)"; \
	  if [ -n "$$missing" ]; then \
	    echo "note: not root, so these Debian packages are not installed; the tests that need them"; \
	    echo "      will skip, saying why (under CI=true they fail). As root: apt-get install$$missing"; \
	  fi; \
	  exit 0; \
	fi
	@command -v mosquitto >/dev/null || test -x /usr/sbin/mosquitto || \
	  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y mosquitto mosquitto-clients; } || \
	  echo "warning: could not install mosquitto; the MQTT tests will skip their broker tests"
	@if ! command -v ffmpeg >/dev/null 2>&1 || ! /usr/bin/python3 -c "$(GST_CHECK)" >/dev/null 2>&1; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    $(STREAM_TEST_PACKAGES); \
	fi
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
	    $(BROWSER_TEST_PACKAGES); \
	fi

# Every test, the slow ones included, then the studies' tests: this is what CI runs.
test: venv test-deps
	$(PY) -m pytest -m "slow or not slow" -q
	$(MAKE) test-experiments

# The studies' tests (experiments/<study>/tests/), apart from the product's.
test-experiments: venv
	$(PY) -m pytest -m "slow or not slow" -q experiments

# The fast tests only (a few minutes), for development.
test-fast: venv test-deps
	$(PY) -m pytest -q

clean-demo:
	rm -rf $(DEMO_DATA) $(DEMO_MODEL)
