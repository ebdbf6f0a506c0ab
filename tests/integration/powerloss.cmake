# Power loss of the whole cluster under bank transfers (tests/powerloss):
# every daemon killed at once, every write the safekeepers and the
# pageserver had not fsynced undone from their journals, restart; every
# acknowledged transfer must survive, nothing half-applied.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  # Under ASan a round costs ~3x: 6 rounds there (each kind of cut is
  # still drawn; the test checks that every kind of file was journaled).
  set(pl_rounds 10)
  if(ARBOR_SANITIZE)
    set(pl_rounds 6)
  endif()
  arbor_integration_test(test_powerloss TIMEOUT 240
    COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/powerloss/powerloss_test.py
            --arbor $<TARGET_FILE:arbor>
    ENV ARBOR_PL_ROUNDS=${pl_rounds})
endif()
