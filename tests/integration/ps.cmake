# Pageserver end to end: 3 safekeepers + the pageserver, reads vs a model.
if(TARGET arbor-pageserver AND TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  arbor_test(test_pageserver
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pageserver.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_walproposer TIMEOUT 900 LABELS integration)
  target_include_directories(test_pageserver PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_pageserver PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(test_pageserver arbor-safekeeper arbor-pageserver)
endif()

# The same model with remote storage: attach of an empty pageserver from the
# bucket, kill -9 mid-upload with disk loss (test_ps_remote.c).
if(TARGET arbor-pageserver AND TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  arbor_test(test_ps_remote
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ps_remote.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_walproposer arbor_base TIMEOUT 900 LABELS integration)
  target_include_directories(test_ps_remote PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_ps_remote PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(test_ps_remote arbor-safekeeper arbor-pageserver)
endif()
