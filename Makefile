# Tandem: firmware for two-node hyperconverged boxes.
#
#   make run     set up, build the image if needed, boot the virtual box
#   make test    set up, vet, unit tests, build the image, boot tests
#   make check   the fast loop: vet and unit tests
#   make image   build the firmware image into images/out (BOARD=qemu-2node)

BOARD   ?= qemu-2node
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
OUT     := images/out
export GOFLAGS := -buildvcs=false

# Everything the image is built from: a change here rebuilds it for `make run`.
IMAGE_INPUTS := $(shell find initramfs services board images web -type f \( -name '*.go' -o -name '*.yaml' \) -not -path 'images/out/*' 2>/dev/null) \
	$(shell find web/console -type f 2>/dev/null) go.mod go.sum

.PHONY: all deps check image run test clean witness tandemctl

all: check

deps:
	@scripts/deps.sh

# -p 1: the namespace tests (real processes, QEMU guests under TCG) run one
# package at a time, so one package's timing is not another's load.
# Tandem's QEMU is built first (minutes on a fresh machine, then cached),
# not inside the VM tests' time limit.
check: deps
	scripts/qemu/build
	go vet ./...
	go test -p 1 -timeout 30m ./...

image: deps
	go run ./images/mkimage -board $(BOARD) -out $(OUT) -version $(VERSION)

$(OUT)/disk.img: $(IMAGE_INPUTS)
	go run ./images/mkimage -board $(BOARD) -out $(OUT) -version $(VERSION)

run: deps $(OUT)/disk.img witness
	go build -o $(OUT)/runbox ./images/runbox
	exec $(OUT)/runbox -images $(OUT) -work $(OUT)/run -board $(BOARD) -witness $(OUT)/tandem-witness

# The standalone witness for any Linux host: one static binary.
witness:
	CGO_ENABLED=0 go build -ldflags "-s -w -X github.com/tandemhci/tandem/services/cmd/tandem-witness.Version=$(VERSION)" -o $(OUT)/tandem-witness ./images/witness

# The command line client for an administrator's machine: one static binary.
tandemctl:
	CGO_ENABLED=0 go build -ldflags "-s -w" -o $(OUT)/tandemctl ./images/tandemctl

# The boot tests need the image: TANDEM_E2E=1 makes its absence a failure.
test: check image
	TANDEM_E2E=1 go test -count=1 -timeout 40m ./images/boottest/

clean:
	rm -rf $(OUT)

# Benchmarks: each ends with one summary line (see the script).
.PHONY: bench-failover bench-storage bench-ha bench-ft bench-api bench-dhcp bench-pxe
bench-failover: deps
	scripts/bench-failover
bench-storage: deps
	scripts/bench-storage
bench-ha: deps
	scripts/bench-ha
bench-ft: deps
	scripts/bench-ft
bench-api: deps
	scripts/bench-api
bench-dhcp: deps
	scripts/bench-dhcp
bench-pxe: deps $(OUT)/disk.img
	scripts/bench-pxe
