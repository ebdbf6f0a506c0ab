# PostgreSQL wire server (compute/pgw_*): real clients against
# pgw_testserver, which serves a plain SQLite file.
if(TARGET arbor_pgw)
  add_executable(pgw_testserver ${CMAKE_CURRENT_LIST_DIR}/pgw_testserver.c)
  target_link_libraries(pgw_testserver PRIVATE arbor_pgw)
endif()
# Protocol level: an in-process server and a raw socket client.
if(TARGET arbor_pgw)
  arbor_test(test_pgw_proto SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pgw_proto.c
             LIBS arbor_pgw PkgConfig::LIBCRYPTO TIMEOUT 120)
endif()
# Real clients (psql, pgbench, psycopg2; installed by scripts/deps.sh)
# against pgw_testserver processes.
if(TARGET arbor_pgw)
  arbor_integration_test(test_pgw_clients HELPERS harness.c LIBS PkgConfig::SQLITE
    DEFS ARBOR_PGW_TESTSERVER_BIN="$<TARGET_FILE:pgw_testserver>"
         ARBOR_PGW_PY_DIR="${CMAKE_CURRENT_LIST_DIR}/pgw"
    DEPENDS pgw_testserver)
endif()

# Differential test (issue 22): pgwire (psycopg2, libpq simple and
# extended), HTTP and VFS sessions against the same statements on a local
# SQLite file. Needs libpq (libpq-dev).
pkg_check_modules(LIBPQ IMPORTED_TARGET libpq)
if(TARGET arbor-compute AND LIBPQ_FOUND)
  arbor_integration_test(test_differential TIMEOUT 300 HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs PkgConfig::LIBPQ PkgConfig::JANSSON
    BINS arbor-safekeeper arbor-pageserver arbor-compute
    DEFS ARBOR_DIFF_PY="${CMAKE_CURRENT_LIST_DIR}/diff/psycopg2_session.py")
endif()
