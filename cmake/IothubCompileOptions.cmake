# Warnings and sanitizers for every iothub target. Applied through an interface
# library so third-party code found via find_package is not affected.
add_library(iothub_options INTERFACE)
target_compile_options(iothub_options INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Werror
  $<$<CXX_COMPILER_ID:GNU>:-Wno-maybe-uninitialized>
  # GCC 12 at -O3 reports false -Wrestrict positives inside std::string (GCC bug 105329).
  $<$<CXX_COMPILER_ID:GNU>:-Wno-restrict>)
if(IOTHUB_SANITIZE)
  target_compile_options(iothub_options INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
                                                  -fno-sanitize-recover=undefined)
  target_link_options(iothub_options INTERFACE -fsanitize=address,undefined)
endif()
if(IOTHUB_FUZZ AND CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  # Instrument every library for coverage so libFuzzer gets feedback from the parsers it
  # links, not only from the fuzz target's own source.
  target_compile_options(iothub_options INTERFACE -fsanitize=fuzzer-no-link,address,undefined
                                                  -fno-sanitize-recover=undefined)
  target_link_options(iothub_options INTERFACE -fsanitize=address,undefined)
endif()
if(IOTHUB_TSAN)
  # GCC 12 turns -Wtsan ("atomic_thread_fence is not supported with -fsanitize=thread", from
  # Asio's headers) into an error under -Werror; TSan still checks every other access there.
  target_compile_options(iothub_options INTERFACE -fsanitize=thread -fno-omit-frame-pointer
                                                  $<$<CXX_COMPILER_ID:GNU>:-Wno-tsan>)
  target_link_options(iothub_options INTERFACE -fsanitize=thread)
endif()

# iothub_module(NAME SOURCES ... DEPS ...): a static library for one src/ module.
function(iothub_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  add_library(iothub_${name} STATIC ${M_SOURCES})
  # include/ holds the public vocabulary (Status, Json, Clock, ...) that the SDKs' headers use;
  # the generator expressions keep source paths out of the installed package (IothubPackaging).
  target_include_directories(iothub_${name} PUBLIC
    $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/src> $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>)
  target_link_libraries(iothub_${name} PUBLIC ${M_DEPS} PRIVATE $<BUILD_INTERFACE:iothub_options>)
endfunction()

# iothub_test(NAME SOURCES ... DEPS ... [LABELS ...]): a GoogleTest binary registered with ctest.
function(iothub_test name)
  cmake_parse_arguments(T "" "" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  add_executable(${name} ${T_SOURCES})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_link_libraries(${name} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main iothub_options)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  gtest_discover_tests(${name} PROPERTIES LABELS "${T_LABELS}" DISCOVERY_TIMEOUT 60)
endfunction()

# iothub_fuzz(NAME SOURCES ... DEPS ... CORPUS dir): a fuzz target defining
# LLVMFuzzerTestOneInput. With -DIOTHUB_FUZZ=ON and clang it is a libFuzzer binary;
# otherwise it is linked with a small driver that replays every file of the seed corpus,
# registered with ctest (NAME_corpus) so the corpus runs (under the sanitizers of the
# preset) in every `make test`. CORPUS is required; the driver fails the test when that
# directory is missing or holds no file (tests/fuzz/replay_main.cpp), so a lost corpus
# cannot pass by replaying nothing.
if(IOTHUB_FUZZ AND CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  set(IOTHUB_LIBFUZZER ON)
else()
  set(IOTHUB_LIBFUZZER OFF)
endif()
function(iothub_fuzz name)
  cmake_parse_arguments(F "" "CORPUS" "SOURCES;DEPS" ${ARGN})
  if(NOT F_CORPUS)
    message(FATAL_ERROR "iothub_fuzz(${name}): CORPUS is required")
  endif()
  add_executable(${name} ${F_SOURCES})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/fuzz)
  target_link_libraries(${name} PRIVATE ${F_DEPS} iothub_options)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  if(IOTHUB_LIBFUZZER)
    target_compile_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer,address,undefined)
  else()
    target_sources(${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests/fuzz/replay_main.cpp)
    add_test(NAME ${name}_corpus COMMAND ${name} ${F_CORPUS})
    set_tests_properties(${name}_corpus PROPERTIES LABELS "unit;fuzz")
  endif()
endfunction()
