# The entry points a newcomer uses. See README.md.
JOBS ?= 2
PRESET ?= release
BUILD_DIR := build/$(PRESET)

.PHONY: deps build test demo dev tsan format clean

deps:
	@scripts/install-deps

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

demo: build
	@scripts/demo

dev:
	@$(MAKE) --no-print-directory test PRESET=dev

tsan:
	@$(MAKE) --no-print-directory test PRESET=tsan

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf build
