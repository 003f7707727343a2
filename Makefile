# raylb: `make test` sets up everything it needs on a fresh machine, then runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test demo venv provision clean

venv: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@echo "==> creating $(VENV) and installing raylb with its test extras"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

provision: $(STAMP)
	@echo "==> provisioning Debian packages (containerd, runc, CNI plugins, Redis, Prometheus, ...)"
	$(BIN)/python -m raylb.cluster.lab.packages
	@echo "==> provisioning Kubernetes, CoreDNS and KubeRay binaries (cached after the first build)"
	$(BIN)/python -m raylb.cluster.localkube.provision
	@echo "==> the Prometheus Operator's CRDs for deploy/monitoring's test (Go module proxy, cached)"
	$(BIN)/python -m raylb.cluster.localkube.promcrds
	@echo "==> building the lab's images: pause, backend, Debian + Ray base, deploy/kuberay/Dockerfile (cached)"
	$(BIN)/python -m raylb.cluster.lab.images

test: provision
	$(BIN)/python -m pytest

# As root: builds the lab (namespaces, Ray, Kubernetes), runs raylb in it and leaves it up.
# DEMO_ARGS=--fresh recreates an existing demo lab; DEMO_ARGS=--kuberay shows raylb in-cluster (KubeRay).
demo: provision
	$(BIN)/raylb demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
