# Commit latency through 3 safekeepers vs a local pwrite+fdatasync.
if(TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  add_executable(bench_safekeeper bench_safekeeper.c
                 ${PROJECT_SOURCE_DIR}/tests/integration/harness.c)
  target_include_directories(bench_safekeeper PRIVATE ${PROJECT_SOURCE_DIR}/tests/integration)
  target_link_libraries(bench_safekeeper PRIVATE arbor_walproposer)
  target_compile_definitions(bench_safekeeper PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>")
  add_dependencies(bench_safekeeper arbor-safekeeper)
endif()
