# Both CLI tests share cli_test_common.c (running `arbor`, the cleanup
# watchdog); it needs ARBOR_CLI_BIN.
# The `arbor` CLI end to end: real `arbor` processes driving a real local
# cluster (3 safekeepers + pageserver) in a temporary directory.
if(TARGET arbor AND TARGET arbor_walproposer)
  arbor_test(test_cli
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_walproposer PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_cli PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_cli arbor arbor-safekeeper arbor-pageserver)
endif()
# Endpoints and `arbor sql` through the CLI: the compute daemons too.
if(TARGET arbor AND TARGET arbor-compute)
  arbor_test(test_cli_endpoint
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_endpoint.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_cli_endpoint PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>" ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_dependencies(test_cli_endpoint arbor arbor-safekeeper arbor-pageserver arbor-compute)
  # "At head" through the CLI: branch / export / lsn / static endpoint
  # right after an insert; replica reads with the write's LSN.
  arbor_test(test_cli_fresh
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_fresh.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_cli_fresh PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_cli_fresh arbor arbor-safekeeper arbor-pageserver arbor-compute)
endif()
# The remote tier through the CLI: stop, delete DIR/ps, start: same answers.
if(TARGET arbor AND TARGET arbor-compute)
  arbor_test(test_cli_remote
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_remote.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_cli_remote PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_cli_remote arbor arbor-safekeeper arbor-pageserver arbor-compute)
  # ... and with `arbor start --remote-storage s3://...` against
  # tests/s3/sigv4_s3.py (an S3 server of the tests' own that verifies every
  # request's signature with botocore).
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    add_test(NAME test_cli_remote_s3
             COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/sigv4_s3.py
                     $<TARGET_FILE:test_cli_remote>)
    set_tests_properties(test_cli_remote_s3 PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77
                         LABELS integration ENVIRONMENT "SIGV4_WATCHDOG_S=500")
  endif()
endif()
# Density through the CLI (issue 18): 1,000 branches, threads/RSS/files of
# the pageserver and safekeepers, branch list time, a query on main.
if(TARGET arbor AND TARGET arbor-compute)
  arbor_test(test_cli_density
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_density.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_cli_density PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_cli_density arbor arbor-safekeeper arbor-pageserver arbor-compute)
endif()
# `arbor branch diff` (issue 17): diffs applied to exports equal the other side.
if(TARGET arbor AND TARGET arbor-compute)
  arbor_test(test_cli_diff
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_diff.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON PkgConfig::SQLITE TIMEOUT 600
             LABELS integration)
  target_compile_definitions(test_cli_diff PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_cli_diff arbor arbor-safekeeper arbor-pageserver arbor-compute)
endif()
# Disk full on the pageserver (a tmpfs in a private mount namespace; root):
# a clear error, ingest pauses, and everything resumes once space is back.
if(TARGET arbor AND TARGET arbor-compute)
  arbor_test(test_ps_diskfull
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ps_diskfull.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_compile_definitions(test_ps_diskfull PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_ps_diskfull arbor arbor-safekeeper arbor-pageserver arbor-compute)
endif()
# `arbor changes` (issue 17, the change feed): the compute's captured row
# changes read back from the safekeepers' WAL.
if(TARGET arbor AND TARGET arbor-compute)
  arbor_test(test_cli_changes
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_changes.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 300
             LABELS integration)
  target_compile_definitions(test_cli_changes PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>")
  add_dependencies(test_cli_changes arbor arbor-safekeeper arbor-pageserver arbor-compute)
endif()
# Webhooks of the change feed (issue 17): arbor-control POSTs a branch's
# changes to a real HTTP receiver (webhook_recv.py).
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-control)
  arbor_test(test_cli_webhooks
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_cli_webhooks.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_common PkgConfig::JANSSON TIMEOUT 300
             LABELS integration)
  target_compile_definitions(test_cli_webhooks PRIVATE
    ARBOR_CLI_BIN="$<TARGET_FILE:arbor>"
    RECV_PY="${CMAKE_CURRENT_LIST_DIR}/webhook_recv.py")
  add_dependencies(test_cli_webhooks arbor arbor-safekeeper arbor-pageserver arbor-compute
                   arbor-control)
endif()
