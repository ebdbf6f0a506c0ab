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
# The same cases against tests/s3/sigv4_s3.py: an S3 server of the test's own
# that checks every request's SigV4 signature with botocore (Debian's
# python3-botocore), an implementation independent of libcurl's.
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME test_remote_storage_sigv4
           COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/sigv4_s3.py
                   $<TARGET_FILE:test_remote_storage>)
  set_tests_properties(test_remote_storage_sigv4 PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77)
endif()
