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
             LIBS arbor_walproposer arbor_base arbor_remote TIMEOUT 900 LABELS integration)
  target_include_directories(test_ps_remote PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_ps_remote PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(test_ps_remote arbor-safekeeper arbor-pageserver)
endif()
# ... and against a real S3 server (s3rver from npm, installed at run time;
# skipped without npm). Not in the sanitizer build: there it repeats the
# whole remote-storage suite for 130-200 s of a CI run on 2 vCPUs, while
# the S3 client itself runs under ASan in test_ps_remote_faults (an S3
# server of the tests' own, misbehaving) and test_cli_remote_s3 (s3rver).
find_program(NODE_BIN node)
find_program(NPM_BIN npm)
if(TARGET test_ps_remote AND NODE_BIN AND NOT ARBOR_SANITIZE)
  add_test(NAME test_ps_remote_s3
           COMMAND ${NODE_BIN} ${PROJECT_SOURCE_DIR}/tests/s3/s3rver_run.mjs
                   $<TARGET_FILE:test_ps_remote>)
  set_tests_properties(test_ps_remote_s3 PROPERTIES TIMEOUT 900 SKIP_RETURN_CODE 77
    LABELS integration
    ENVIRONMENT "S3RVER_CACHE=${CMAKE_BINARY_DIR}/s3rver-cache;NPM_BIN=${NPM_BIN}")
endif()

# The bucket misbehaving (test_ps_remote_faults.c): sigv4_s3.py (an S3
# server of the tests' own) behind faultproxy.py (errors, slowness, dropped
# and cut connections, switched by the test through a control port).
if(TARGET test_ps_remote)
  find_package(Python3 COMPONENTS Interpreter)
  add_executable(test_ps_remote_faults ${CMAKE_CURRENT_LIST_DIR}/test_ps_remote_faults.c
                 ${CMAKE_CURRENT_LIST_DIR}/harness.c ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c)
  target_link_libraries(test_ps_remote_faults PRIVATE arbor_walproposer arbor_base
                        PkgConfig::CMOCKA)
  target_include_directories(test_ps_remote_faults PRIVATE ${PROJECT_SOURCE_DIR}/tests
                             ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_ps_remote_faults PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>")
  add_dependencies(test_ps_remote_faults arbor-safekeeper arbor-pageserver)
  if(Python3_Interpreter_FOUND)
    add_test(NAME test_ps_remote_faults
             COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/sigv4_s3.py
                     ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/faultproxy.py
                     $<TARGET_FILE:test_ps_remote_faults>)
    set_tests_properties(test_ps_remote_faults PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
                         LABELS integration ENVIRONMENT "SIGV4_WATCHDOG_S=500")
  endif()
endif()
