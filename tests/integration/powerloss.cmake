# Power loss of the whole cluster under bank transfers (tests/powerloss):
# every daemon killed at once, every write the safekeepers and the
# pageserver had not fsynced undone from their journals, restart; every
# acknowledged transfer must survive, nothing half-applied.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  arbor_integration_test(test_powerloss TIMEOUT 240
    COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/powerloss/powerloss_test.py
            --arbor $<TARGET_FILE:arbor>)
endif()
