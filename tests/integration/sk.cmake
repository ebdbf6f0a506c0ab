# Safekeeper daemons end to end (bad input, torn tail, disk full, kill -9).
if(TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  arbor_integration_test(test_safekeeper HELPERS harness.c
    LIBS arbor_walproposer arbor_sk BINS arbor-safekeeper)
endif()
