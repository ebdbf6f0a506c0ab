# The arbor VFS against plain SQLite on a local file (synchronous=FULL):
# speedtest-style mixed workload warm / cold, autocommit INSERT p50 / p99.
# Run: build/bench/bench_vfs [-r rows] [-i inserts]
if(TARGET arbor_vfs AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  add_executable(bench_vfs ${CMAKE_CURRENT_LIST_DIR}/bench_vfs.c
                 ${PROJECT_SOURCE_DIR}/tests/integration/harness.c)
  target_include_directories(bench_vfs PRIVATE ${PROJECT_SOURCE_DIR}/tests/integration)
  target_link_libraries(bench_vfs PRIVATE arbor_vfs)
  target_compile_definitions(bench_vfs PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
                             ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(bench_vfs arbor-safekeeper arbor-pageserver)
endif()
