# arbor-compute through the PostgreSQL protocol vs a local PostgreSQL 15 in
# the same run: pgbench TPS/latency (simple + extended protocol, read-write
# and read-only) and endpoint cold start (fork -> first answer).
# Needs /usr/bin/pgbench and /usr/lib/postgresql/15/bin at run time.
# Run: build/bench/bench_endpoint [-h for flags]
if(TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  add_executable(bench_endpoint ${CMAKE_CURRENT_LIST_DIR}/bench_endpoint.c
                 ${PROJECT_SOURCE_DIR}/tests/integration/harness.c)
  target_include_directories(bench_endpoint PRIVATE ${PROJECT_SOURCE_DIR}/tests/integration)
  target_link_libraries(bench_endpoint PRIVATE arbor_common arbor_clients Threads::Threads)
  target_compile_definitions(bench_endpoint PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
                             ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
                             ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>")
  add_dependencies(bench_endpoint arbor-safekeeper arbor-pageserver arbor-compute)
endif()
