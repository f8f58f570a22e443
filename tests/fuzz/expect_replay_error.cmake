# Runs a replay driver (tests/fuzz/replay_main.cpp) and passes only when it exits with
# status 2 and an error message matching EXPECT: proves that a missing or empty corpus
# fails its test. Usage: cmake -DDRIVER=... -DCORPUS=... -DEXPECT=regex -P this file.
execute_process(COMMAND ${DRIVER} ${CORPUS} RESULT_VARIABLE rc ERROR_VARIABLE err OUTPUT_VARIABLE out)
if(NOT rc EQUAL 2)
  message(FATAL_ERROR "expected exit status 2, got '${rc}'\nstdout: ${out}\nstderr: ${err}")
endif()
if(NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "expected an error matching '${EXPECT}', got: ${err}")
endif()
message(STATUS "replay failed as expected: ${err}")
