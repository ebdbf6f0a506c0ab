# Freshness through the CLI's local cluster: replica visibility lag of a
# commit (idle and under 1/8/32 writers) and pageserver ingest lag of a lone
# commit. Run: build/bench/bench_fresh [-h for flags]; -a another build's
# arbor for a before/after comparison.
if(TARGET arbor AND TARGET arbor-compute)
  add_executable(bench_fresh ${CMAKE_CURRENT_LIST_DIR}/bench_fresh.c)
  target_link_libraries(bench_fresh PRIVATE arbor_common arbor_clients PkgConfig::JANSSON
                        Threads::Threads)
  target_compile_definitions(bench_fresh PRIVATE ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(bench_fresh arbor arbor-safekeeper arbor-pageserver arbor-compute)
endif()
