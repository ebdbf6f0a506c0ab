# Walproposer against real arbor-safekeeper processes (tests/integration/
# harness.c starts, kills and restarts them on loopback).
if(TARGET arbor-safekeeper)
  arbor_test(test_wp_cluster
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_wp_cluster.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
             LIBS arbor_walproposer TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_wp_cluster PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>")
  add_dependencies(test_wp_cluster arbor-safekeeper)
endif()
