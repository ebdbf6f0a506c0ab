# Walproposer against real arbor-safekeeper processes (tests/integration/
# harness.c starts, kills and restarts them on loopback).
if(TARGET arbor-safekeeper)
  arbor_integration_test(test_wp_cluster HELPERS harness.c LIBS arbor_walproposer
    BINS arbor-safekeeper)
endif()
