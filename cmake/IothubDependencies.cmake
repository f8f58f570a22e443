# Every dependency comes from a Debian 12 package (see scripts/install-deps).
find_package(Boost 1.81.0 EXACT CONFIG REQUIRED COMPONENTS json url)
find_package(OpenSSL 3 REQUIRED)
find_package(SQLite3 REQUIRED)
find_package(PostgreSQL REQUIRED)  # libpq (libpq-dev); the server programs are for tests only
find_package(Threads REQUIRED)
find_package(spdlog REQUIRED)
find_package(CLI11 REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)  # core only: the hub serves the text format itself
find_package(GTest REQUIRED)
find_package(benchmark REQUIRED)
