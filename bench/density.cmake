# Idle branch cost: threads, RSS, fds per branch, create p50/p99, restart.
# Run: build/bench/bench_density [-n branches]
if(TARGET arbor_vfs AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  add_executable(bench_density ${CMAKE_CURRENT_LIST_DIR}/bench_density.c
                 ${PROJECT_SOURCE_DIR}/tests/integration/harness.c)
  target_include_directories(bench_density PRIVATE ${PROJECT_SOURCE_DIR}/tests/integration)
  target_link_libraries(bench_density PRIVATE arbor_vfs)
  target_compile_definitions(bench_density PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
                             ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(bench_density arbor-safekeeper arbor-pageserver)
endif()
