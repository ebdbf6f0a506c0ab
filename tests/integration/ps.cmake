# Pageserver end to end: 3 safekeepers + the pageserver, reads vs a model.
if(TARGET arbor-pageserver AND TARGET arbor-safekeeper AND TARGET arbor_walproposer)
  arbor_integration_test(test_pageserver TIMEOUT 900 HELPERS harness.c ps_test_client.c
    LIBS arbor_walproposer BINS arbor-safekeeper arbor-pageserver)

  # The same model with remote storage: attach of an empty pageserver from
  # the bucket, kill -9 mid-upload with disk loss (test_ps_remote.c).
  arbor_integration_test(test_ps_remote TIMEOUT 900 HELPERS harness.c ps_test_client.c
    LIBS arbor_walproposer arbor_base arbor_remote BINS arbor-safekeeper arbor-pageserver)
endif()
# ... and against a real S3 server (s3rver from npm, installed at run time;
# skipped without npm). Not in the sanitizer build: there it repeats the
# whole remote-storage suite for 130-200 s of a CI run on 2 vCPUs, while
# the S3 client itself runs under ASan in test_ps_remote_faults (an S3
# server of the tests' own, misbehaving) and test_cli_remote_s3 (s3rver).
find_program(NODE_BIN node)
find_program(NPM_BIN npm)
if(TARGET test_ps_remote AND NODE_BIN AND NOT ARBOR_SANITIZE)
  arbor_integration_test(test_ps_remote_s3 TIMEOUT 900 SKIP_RETURN_CODE 77
    COMMAND ${NODE_BIN} ${PROJECT_SOURCE_DIR}/tests/s3/s3rver_run.mjs
            $<TARGET_FILE:test_ps_remote>
    ENV S3RVER_CACHE=${CMAKE_BINARY_DIR}/s3rver-cache NPM_BIN=${NPM_BIN})
endif()

# The bucket misbehaving (test_ps_remote_faults.c): sigv4_s3.py (an S3
# server of the tests' own) behind faultproxy.py (errors, slowness, dropped
# and cut connections, switched by the test through a control port).
if(TARGET test_ps_remote)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    arbor_integration_test(test_ps_remote_faults SKIP_RETURN_CODE 77 ENV SIGV4_WATCHDOG_S=500
      HELPERS harness.c ps_test_client.c LIBS arbor_walproposer arbor_base
      BINS arbor-safekeeper arbor-pageserver
      RUN_UNDER ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/sigv4_s3.py
                ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/faultproxy.py)
  endif()
endif()
