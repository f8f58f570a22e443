# The entry points a newcomer uses. See README.md.
JOBS ?= 2
PRESET ?= release
BUILD_DIR := build/$(PRESET)

.PHONY: deps build test demo dev tsan sanitize tsan-ci format clean

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

# What CI runs after `make test`: the dev build (ASan+UBSan) and its unit and integration
# tests (test preset "sanitize": sanitizer options, sdk-compat and bench-smoke left out).
sanitize: deps
	@cmake --preset dev >/dev/null
	@cmake --build --preset dev -j $(JOBS)
	@ctest --preset sanitize -j $(JOBS)

# The same tests under ThreadSanitizer (test preset "tsan-ci").
tsan-ci: deps
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS)
	@ctest --preset tsan-ci -j $(JOBS)

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf build
