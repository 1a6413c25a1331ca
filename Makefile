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
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[train,openvino,dev]'
	rm -f $(VENV)/.installed-* && touch $@

# Train the default recipe, export a bundle (checked in ONNX Runtime), write the reports.
demo: $(STAMP)
	$(EP) train --recipe $(RECIPE) --out $(RUN)/checkpoint --force
	$(EP) export $(RUN)/checkpoint -o $(RUN)/bundle --force
	$(EP) info $(RUN)/checkpoint --json > $(RUN)/train-report.json.tmp && mv $(RUN)/train-report.json.tmp $(RUN)/train-report.json
	@echo "demo done: checkpoint $(RUN)/checkpoint, bundle $(RUN)/bundle (manifest.json has the export check), report $(RUN)/train-report.json"

# The remote-bench tests start a real OpenSSH server on 127.0.0.1 (Debian's openssh-server).
SSHD_PKG := $(shell test -x /usr/sbin/sshd || echo missing)

test: $(STAMP)
ifeq ($(SSHD_PKG),missing)
	-(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client) >/dev/null 2>&1 || echo "note: could not install openssh-server; remote-bench tests will skip"
endif
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs reports *.egg-info
