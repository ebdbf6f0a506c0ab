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
  arbor_test(test_pgw_clients
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pgw_clients.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
             LIBS PkgConfig::SQLITE TIMEOUT 600 LABELS integration)
  target_include_directories(test_pgw_clients PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_pgw_clients PRIVATE
    ARBOR_PGW_TESTSERVER_BIN="$<TARGET_FILE:pgw_testserver>"
    ARBOR_PGW_PY_DIR="${CMAKE_CURRENT_LIST_DIR}/pgw")
  add_dependencies(test_pgw_clients pgw_testserver)
endif()

# Differential test (issue 22): pgwire (psycopg2, libpq simple and
# extended), HTTP and VFS sessions against the same statements on a local
# SQLite file. Needs libpq (libpq-dev).
pkg_check_modules(LIBPQ IMPORTED_TARGET libpq)
if(TARGET arbor-compute AND LIBPQ_FOUND)
  arbor_test(test_differential
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_differential.c
                     ${CMAKE_CURRENT_LIST_DIR}/test_vfs_common.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_vfs PkgConfig::LIBPQ PkgConfig::JANSSON TIMEOUT 300 LABELS integration)
  target_include_directories(test_differential PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_differential PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
    ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>"
    ARBOR_DIFF_PY="${CMAKE_CURRENT_LIST_DIR}/diff/psycopg2_session.py")
  add_dependencies(test_differential arbor-safekeeper arbor-pageserver arbor-compute)
endif()
