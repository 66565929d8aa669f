# SPDX-License-Identifier: MIT
# The two commands of the README: `make demo` and `make test`.  Each installs
# what is missing (scripts/install-deps.sh) and builds what it needs.

BUILD ?= build

.PHONY: all deps demo test bench format clean

all: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

$(BUILD)/build.ninja:
	meson setup $(BUILD) -Dtests=enabled

deps:
	@scripts/install-deps.sh

demo: all
	$(BUILD)/tools/blkmig demo

test: deps
	scripts/run-tests.sh

bench: all
	bench/run.sh

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build*.log
