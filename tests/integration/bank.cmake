# Bank transfers through the PostgreSQL endpoint while each kind of daemon
# is killed with SIGKILL and restarted by `arbor start` (tests/bank): no
# reader sees the total change, every acknowledged transfer survives.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  arbor_integration_test(test_bank TIMEOUT 300
    COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/bank/bank_test.py
            --arbor $<TARGET_FILE:arbor>)
endif()
