# The entry points a newcomer uses. See README.md.
JOBS ?= 2
PRESET ?= release
BUILD_DIR := build/$(PRESET)

.PHONY: deps build test demo cluster-demo dev tsan sanitize tsan-ci format clean

deps:
	@scripts/install-deps

build: deps
	@cmake --preset $(PRESET) >/dev/null
	@cmake --build --preset $(PRESET) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) --timeout 600

demo: build
	@scripts/demo

# The reference scenario on a local three-node cluster (scripts/cluster; docs/cluster.md).
cluster-demo: build
	@scripts/demo --cluster

dev:
	@$(MAKE) --no-print-directory test PRESET=dev

tsan:
	@$(MAKE) --no-print-directory test PRESET=tsan

# What CI runs after `make test`: the dev build (ASan+UBSan) and its unit and integration
# tests (test preset "sanitize": sanitizer options, sdk-compat and bench-smoke left out).
# Sanitizer reports go to build/dev/sanitizer-report.<pid>, so that a report from an iothubd
# that an integration test started (and whose exit status the test may not check) fails too.
sanitize: deps
	@cmake --preset dev >/dev/null
	@cmake --build --preset dev -j $(JOBS)
	@rm -f build/dev/sanitizer-report.*
	@rc=0; ctest --preset sanitize -j $(JOBS) || rc=$$?; \
	if ls build/dev/sanitizer-report.* >/dev/null 2>&1; then \
	  cat build/dev/sanitizer-report.*; \
	  echo "make sanitize: sanitizer reports above (build/dev/sanitizer-report.*)"; exit 1; \
	fi; exit $$rc

# The same tests under ThreadSanitizer (test preset "tsan-ci"); reports of any process,
# iothubd started by an integration test included, land in build/tsan/sanitizer-report.*.
tsan-ci: deps
	@cmake --preset tsan >/dev/null
	@cmake --build --preset tsan -j $(JOBS)
	@rm -f build/tsan/sanitizer-report.*
	@rc=0; ctest --preset tsan-ci -j $(JOBS) || rc=$$?; \
	if ls build/tsan/sanitizer-report.* >/dev/null 2>&1; then \
	  cat build/tsan/sanitizer-report.*; \
	  echo "make tsan-ci: ThreadSanitizer reports above (build/tsan/sanitizer-report.*)"; exit 1; \
	fi; exit $$rc

format:
	@git ls-files '*.cpp' '*.hpp' | xargs clang-format -i

clean:
	rm -rf build
