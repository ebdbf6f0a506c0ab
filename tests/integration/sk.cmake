# Safekeeper daemons end to end (bad input, torn tail, disk full, kill -9).
if(TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  arbor_test(test_safekeeper
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_safekeeper.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
             LIBS arbor_walproposer arbor_sk TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_safekeeper PRIVATE
                             ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>")
  target_include_directories(test_safekeeper PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  add_dependencies(test_safekeeper arbor-safekeeper)
endif()
