# The two set-up commands are `make demo` and `make test`; both install what
# they need (system packages when run as root, a virtualenv in .venv).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup demo test bench lint sample-config guest-zipapp clean

setup: $(VENV)/.installed .system-deps

.system-deps: scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	@touch $@

$(VENV)/.installed: pyproject.toml nfvha/compute/_steady.c | .system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(VENV)/bin/nfvha demo

test: setup
	$(VENV)/bin/pytest -q -ra --durations=25

bench: setup
	$(PY) bench/run.py

lint: setup
	$(VENV)/bin/ruff check nfvha tests bench

sample-config: setup
	$(VENV)/bin/oslo-config-generator --namespace nfvha --output-file etc/nfvha/nfvha.conf.sample

guest-zipapp: setup
	$(PY) scripts/build_guest_zipapp.py -o dist/nfvha-guest.pyz

clean:
	rm -rf $(VENV) .system-deps build dist *.egg-info

# The guest image for QEMU/libvirt VMs (nfvha/demo/guest_image.py): builds or
# finds it in the cache and prints kernel, initrd and a kernel command line.
# GUEST_IMAGE_ARGS=--install also copies them to /var/lib/nfvha/images/.
.PHONY: guest-image
guest-image: setup
	$(PY) -m nfvha.demo.guest_image $(GUEST_IMAGE_ARGS)

# Hang detection side by side on real QEMU guests under libvirt (a bench, not
# in CI): nfvha at 100 ms and its default vs a qemu-ga guest-ping loop
# (100 ms; Masakari's defaults) and the i6300esb watchdog, the same hangs.
# BENCH_VM_ARGS=--short for a few minutes, --json for one JSON document.
.PHONY: bench-vm
bench-vm: setup
	$(PY) bench/vm_side_by_side.py $(BENCH_VM_ARGS)

# The guest agent's own CPU inside a real QEMU guest under libvirt (a bench,
# not in CI; bench/guest_cpu_vm.py): its % of the guest's vCPU at 100 ms and
# at its default interval, the guest's busy share against the agent stopped,
# 60 s windows. TCG: an upper bound for KVM. GUEST_CPU_ARGS=--quick for 10 s
# windows, --json for one JSON document.
.PHONY: bench-guest-cpu
bench-guest-cpu: setup
	$(PY) bench/guest_cpu_vm.py $(GUEST_CPU_ARGS)

# Fuzzing campaign (bench/fuzz.py): >= 10^7 hostile inputs over every parser,
# machine and validator that takes untrusted input, on every core; prints
# inputs, time and findings (exit 1 if any). FUZZ_ARGS="--inputs 200000" for
# a short run, "--seed N --only NAME" to reproduce a finding.
.PHONY: fuzz
fuzz: setup
	$(PY) bench/fuzz.py $(FUZZ_ARGS)

# Chaos (bench/chaos.py): 3 controllers, 2 compute agents, 52 guests as
# processes on a private PostgreSQL and RabbitMQ; faults and server-group
# broadcasts stream while a controller and a compute agent are killed -9 and
# restarted, the broker and the database server restarted. Prints faults
# detected against deliveries per sink (lost, duplicates), delays, broadcasts
# lost. CHAOS_ARGS=--short for ~30 s (CI runs that as a test), --json.
.PHONY: chaos
chaos: setup
	$(PY) bench/chaos.py $(CHAOS_ARGS)

# Soak (bench/soak.py, not in CI): 500 simulated guests at 100 ms heartbeated
# by a compute agent process, two `nfvha controller` processes on one fresh
# PostgreSQL database and the local RabbitMQ, a webhook stand-in as the sink,
# 30 minutes. Prints every process's RSS (start, each minute, end, slope in
# MB/h), false alarms (agent, controllers, sink: 0 expected) and the round-trip
# p99 per minute. SOAK_ARGS="--minutes 3" for a short run, --json for one JSON
# document. Needs PostgreSQL (postgres@127.0.0.1) and RabbitMQ (guest/guest).
.PHONY: soak
soak: setup
	$(PY) bench/soak.py $(SOAK_ARGS)
