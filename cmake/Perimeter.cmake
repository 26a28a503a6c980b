# Helpers shared by every area's CMakeLists.txt.

# perimeter_test(NAME <name> SOURCES <files...> LIBS <targets...> LABELS <unit|integration|e2e>
#                [TIMEOUT <seconds>] [COST <seconds>] [REAL_NODE] [ENV <VAR=value...>])
# Builds a GoogleTest binary and registers it with ctest as one test, so ctest's summary counts
# test binaries and each binary prints its own GoogleTest summary.
# `make test` runs tests in parallel: REAL_NODE marks a test that starts the local real node, which
# one process at a time may run on a machine (localcluster/machine_lock.h), so ctest runs such
# tests one after another instead of letting one wait on the lock in a slot. COST is about how
# long the test runs, so that ctest starts the long ones first on a clean build too (it has no
# timings of earlier runs there).
function(perimeter_test)
  cmake_parse_arguments(T "REAL_NODE" "NAME;TIMEOUT;COST" "SOURCES;LIBS;LABELS;ENV" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gmock GTest::gtest)
  if(NOT T_LIBS MATCHES "GTest::gtest_main|GTest::gmock_main|perimeter_test_main")
    target_link_libraries(${T_NAME} PRIVATE GTest::gmock_main)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_NAME} --gtest_color=no)
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    ENVIRONMENT "PERIMETER_SOURCE_DIR=${PROJECT_SOURCE_DIR};PERIMETER_BIN_DIR=${CMAKE_BINARY_DIR}/bin;${T_ENV}")
  # A test that skips is reported as skipped by ctest rather than passing quietly.
  set_tests_properties(${T_NAME} PROPERTIES SKIP_REGULAR_EXPRESSION "\\[  SKIPPED \\]")
  if(T_REAL_NODE)
    set_tests_properties(${T_NAME} PROPERTIES RESOURCE_LOCK perimeter_real_node)
  endif()
  if(T_COST)
    set_tests_properties(${T_NAME} PROPERTIES COST ${T_COST})
  endif()
endfunction()

# Adds every immediate child folder that has a CMakeLists.txt, so areas owned by different
# people never edit a shared list. Targets resolve at generate time, so the order is irrelevant.
function(perimeter_add_child_dirs)
  file(GLOB children LIST_DIRECTORIES true RELATIVE ${CMAKE_CURRENT_SOURCE_DIR} CONFIGURE_DEPENDS
       ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT children)
  foreach(child ${children})
    if(IS_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/${child} AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${child}/CMakeLists.txt)
      add_subdirectory(${child})
    endif()
  endforeach()
endfunction()
