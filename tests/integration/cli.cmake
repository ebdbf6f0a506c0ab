# The CLI tests: real `arbor` processes driving a real local cluster in a
# temporary directory. They share cli_test_common.c (running `arbor`, the
# cleanup watchdog), which needs ARBOR_CLI_BIN.
#   arbor_cli_test(NAME [TIMEOUT s] [LIBS ...] [DEFS ...] [DEPENDS ...])
# builds tests/integration/NAME.c with it, links arbor_common and jansson
# (+ LIBS), and makes it depend on arbor and the storage daemons (+ DEPENDS).
function(arbor_cli_test name)
  cmake_parse_arguments(A "" "TIMEOUT" "LIBS;DEFS;DEPENDS" ${ARGN})
  arbor_integration_test(${name} TIMEOUT ${A_TIMEOUT} HELPERS cli_test_common.c
    LIBS arbor_common PkgConfig::JANSSON ${A_LIBS} BINS arbor DEFS ${A_DEFS}
    DEPENDS arbor-safekeeper arbor-pageserver ${A_DEPENDS})
endfunction()

# The `arbor` CLI end to end (3 safekeepers + pageserver + control).
if(TARGET arbor AND TARGET arbor_walproposer)
  arbor_cli_test(test_cli LIBS arbor_walproposer)
endif()
if(TARGET arbor AND TARGET arbor-compute)
  # Endpoints and `arbor sql` through the CLI: the compute daemons too.
  arbor_cli_test(test_cli_endpoint DEFS ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                 DEPENDS arbor-compute)
  # "At head" through the CLI: branch / export / lsn / static endpoint
  # right after an insert; replica reads with the write's LSN.
  arbor_cli_test(test_cli_fresh DEPENDS arbor-compute)
  # The README's run command (scripts/run.sh on this build): psql through
  # the URL it prints; SIGTERM / SIGINT to its process group stop the cluster.
  arbor_cli_test(test_run_script DEFS ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                 DEPENDS arbor-compute)
  # The remote tier through the CLI: stop, delete DIR/ps, start: same answers.
  arbor_cli_test(test_cli_remote DEPENDS arbor-compute)
  # ... and with `arbor start --remote-storage s3://...` against
  # tests/s3/sigv4_s3.py (an S3 server of the tests' own that verifies every
  # request's signature with botocore).
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    arbor_integration_test(test_cli_remote_s3 SKIP_RETURN_CODE 77 ENV SIGV4_WATCHDOG_S=500
      COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/s3/sigv4_s3.py
              $<TARGET_FILE:test_cli_remote>)
  endif()
  # Density through the CLI (issue 18): 1,000 branches, threads/RSS/files of
  # the pageserver and safekeepers, branch list time, a query on main.
  arbor_cli_test(test_cli_density DEPENDS arbor-compute)
  # `arbor branch diff` (issue 17): diffs applied to exports equal the other side.
  arbor_cli_test(test_cli_diff LIBS PkgConfig::SQLITE DEPENDS arbor-compute)
  # Disk full on the pageserver (a tmpfs in a private mount namespace; root):
  # a clear error, ingest pauses, and everything resumes once space is back.
  arbor_cli_test(test_ps_diskfull DEPENDS arbor-compute)
  # `arbor changes` (issue 17, the change feed): the compute's captured row
  # changes read back from the safekeepers' WAL.
  arbor_cli_test(test_cli_changes TIMEOUT 300 DEPENDS arbor-compute)
endif()
# Webhooks of the change feed (issue 17): arbor-control POSTs a branch's
# changes to a real HTTP receiver (webhook_recv.py).
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor-control)
  arbor_cli_test(test_cli_webhooks TIMEOUT 300
                 DEFS RECV_PY="${CMAKE_CURRENT_LIST_DIR}/webhook_recv.py"
                 DEPENDS arbor-compute arbor-control)
endif()
