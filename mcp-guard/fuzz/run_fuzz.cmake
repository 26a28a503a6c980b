# Runs the mcp-guard fuzz target for a bounded time (ctest: mcpguard_mcp_fuzz). Fails on any
# crash, leak, sanitizer report or timeout, and when the fuzzer could not be built: a fuzz test
# that cannot run must not pass.
# -D FUZZER=<binary> SEEDS=<committed corpus> WORK=<scratch dir> [PROBLEM=<why it cannot build>]
if(PROBLEM)
  message(FATAL_ERROR "mcpguard_mcp_fuzz cannot run: ${PROBLEM}. `make deps` installs clang and "
                      "libclang-rt-14-dev (hack/install-deps.sh); then reconfigure.")
endif()
if(NOT EXISTS "${FUZZER}")
  message(FATAL_ERROR "${FUZZER} is not built: build the target mcpguard_mcp_fuzz (needs clang; "
                      "`make deps` installs it).")
endif()
# New inputs go to the scratch directory, never into the committed seeds; crashes are written
# there too, with the path printed below.
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}/corpus")
execute_process(
  COMMAND "${FUZZER}" -max_total_time=60 -rss_limit_mb=2048 -timeout=25 -max_len=16384
          -print_final_stats=1 "-artifact_prefix=${WORK}/" "${WORK}/corpus" "${SEEDS}"
  RESULT_VARIABLE result)
if(NOT result EQUAL 0)
  file(GLOB artifacts "${WORK}/crash-*" "${WORK}/leak-*" "${WORK}/timeout-*" "${WORK}/oom-*")
  message(FATAL_ERROR "mcpguard_mcp_fuzz failed (${result}); reproduce with: ${FUZZER} ${artifacts}")
endif()
