# The control plane: wake of a suspended endpoint (API -> first row) beside a
# warm query, and branch creation through the API vs the pageserver alone.
# Run: build/bench/bench_control [-n wakes] [-b branches]
if(TARGET arbor-control AND TARGET arbor-compute AND TARGET arbor-pageserver)
  add_executable(bench_control ${CMAKE_CURRENT_LIST_DIR}/bench_control.c
                 ${PROJECT_SOURCE_DIR}/tests/integration/harness.c)
  target_include_directories(bench_control PRIVATE ${PROJECT_SOURCE_DIR}/tests/integration)
  target_link_libraries(bench_control PRIVATE arbor_clients arbor_http_client
                        PkgConfig::JANSSON Threads::Threads)
  target_compile_definitions(bench_control PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
                             ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
                             ARBOR_CONTROL_BIN="$<TARGET_FILE:arbor-control>"
                             ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>")
  add_dependencies(bench_control arbor-safekeeper arbor-pageserver arbor-control arbor-compute)
endif()
