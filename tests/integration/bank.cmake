# Bank transfers through the PostgreSQL endpoint while each kind of daemon
# is killed with SIGKILL and restarted by `arbor start` (tests/bank): no
# reader sees the total change, every acknowledged transfer survives.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  add_test(NAME test_bank
           COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/bank/bank_test.py
                   --arbor $<TARGET_FILE:arbor>)
  set_tests_properties(test_bank PROPERTIES TIMEOUT 300 LABELS integration)
endif()
