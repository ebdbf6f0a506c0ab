# remote_storage: the local backend always; the S3 backend against a real
# s3rver (tests/s3/s3rver_run.mjs installs it with npm into a cache dir at
# run time; skipped, exit 77, without npm or a reachable registry).
arbor_test(test_remote_storage SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_remote_storage.c
           LIBS arbor_remote TIMEOUT 120)
find_program(NODE_BIN node)
find_program(NPM_BIN npm)
if(NODE_BIN)
  add_test(NAME test_remote_storage_s3
           COMMAND ${NODE_BIN} ${PROJECT_SOURCE_DIR}/tests/s3/s3rver_run.mjs
                   $<TARGET_FILE:test_remote_storage>)
  set_tests_properties(test_remote_storage_s3 PROPERTIES TIMEOUT 400 SKIP_RETURN_CODE 77
    ENVIRONMENT "S3RVER_CACHE=${CMAKE_BINARY_DIR}/s3rver-cache;NPM_BIN=${NPM_BIN}")
endif()
