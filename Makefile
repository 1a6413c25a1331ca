# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EP     := $(VENV)/bin/edgeproto
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
RUN    ?= runs/demo
RECIPE ?= models/protopnet_procedural.yaml

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train,openvino,pretrained,segmentation,video,serve,dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Train the default recipe, export a bundle (checked in ONNX Runtime), validate it on ONNX Runtime
# and OpenVINO against PyTorch, explain one test image on the device side, write the reports.
demo: $(STAMP)
	$(EP) train --recipe $(RECIPE) --out $(RUN)/checkpoint --force
	$(EP) info $(RUN)/checkpoint
	$(EP) export $(RUN)/checkpoint -o $(RUN)/bundle --force
	$(EP) validate $(RUN)/bundle --target onnxruntime --out $(RUN)/validate-onnxruntime
	$(EP) validate $(RUN)/bundle --target openvino --out $(RUN)/validate-openvino
	$(PY) -c "from edgeproto.bundle import open_bundle; from edgeproto.data import build_dataset; from PIL import Image; b = open_bundle('$(RUN)/bundle'); Image.fromarray(build_dataset(b.manifest['data'], 'test').raw_image(0)).save('$(RUN)/test-image-0.png')"
	$(EP) explain $(RUN)/bundle $(RUN)/test-image-0.png --target openvino --because -o $(RUN)/explain-test-image-0
	@echo
	@echo "demo done:"
	@echo "  checkpoint  $(RUN)/checkpoint"
	@echo "  bundle      $(RUN)/bundle   (manifest.json holds the export check)"
	@echo "  reports     $(RUN)/validate-onnxruntime/report.html  $(RUN)/validate-openvino/report.html"
	@echo "  explanation $(RUN)/explain-test-image-0.png"

# The remote-bench tests start a real OpenSSH server on 127.0.0.1 (Debian's openssh-server).
SSHD_PKG := $(shell test -x /usr/sbin/sshd || echo missing)
# The web page test of `edgeproto serve` drives Debian's headless Chromium with Selenium.
CHROMIUM_PKG := $(shell test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || echo missing)

test: $(STAMP)
ifeq ($(SSHD_PKG),missing)
	-(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client) >/dev/null 2>&1 || echo "note: could not install openssh-server; remote-bench tests will skip"
endif
ifeq ($(CHROMIUM_PKG),missing)
	-(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null 2>&1 || echo "note: could not install chromium; the web page test will skip"
endif
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs reports *.egg-info
