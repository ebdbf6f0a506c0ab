# Pageserver end to end through real daemons (3 safekeepers + pageserver):
# GetPage latency and batched throughput against an in-process RPC floor,
# ingest rate, layers visited per read, storage of 10 copy-on-write branches.
# Run: build/bench/bench_pageserver [-h for flags]
if(TARGET arbor-pageserver AND TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  add_executable(bench_pageserver ${CMAKE_CURRENT_LIST_DIR}/bench_pageserver.c
                 ${PROJECT_SOURCE_DIR}/tests/integration/harness.c)
  target_include_directories(bench_pageserver PRIVATE ${PROJECT_SOURCE_DIR}/tests/integration)
  target_link_libraries(bench_pageserver PRIVATE arbor_walproposer Threads::Threads)
  target_compile_definitions(bench_pageserver PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
                             ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(bench_pageserver arbor-safekeeper arbor-pageserver)
endif()
