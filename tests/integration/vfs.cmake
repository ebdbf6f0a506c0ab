# The arbor VFS end to end: real safekeepers + pageserver, SQL through the
# VFS (compute/). test_vfs_helper is a compute process the tests start,
# kill -9 and fence.
if(TARGET arbor_vfs)
  arbor_test(test_vfs_cache SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_vfs_cache.c
             LIBS arbor_vfs TIMEOUT 60)
endif()
if(TARGET arbor_vfs AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  add_executable(test_vfs_helper ${CMAKE_CURRENT_LIST_DIR}/test_vfs_helper.c)
  target_link_libraries(test_vfs_helper PRIVATE arbor_vfs)
  set(VFS_TESTS test_vfs test_vfs_fault test_vfs_modes test_vfs_bigtxn)
  # The shell test loads libarbor.so into /usr/bin/sqlite3, which is not
  # built with ASan: only in normal builds.
  if(NOT ARBOR_SANITIZE)
    list(APPEND VFS_TESTS test_vfs_shell)
    # A plain SQLite program (system libsqlite3 only) that loads libarbor.so:
    # run by test_vfs_shell, with Python's sqlite3 module and the shell.
    add_executable(arbor_open_example ${CMAKE_CURRENT_LIST_DIR}/arbor_open_example.c)
    target_link_libraries(arbor_open_example PRIVATE PkgConfig::SQLITE)
  endif()
  foreach(t ${VFS_TESTS})
    arbor_integration_test(${t} HELPERS ${ARBOR_VFS_TEST_HELPERS} LIBS arbor_vfs
      BINS arbor-safekeeper arbor-pageserver
      DEFS ARBOR_VFS_HELPER_BIN="$<TARGET_FILE:test_vfs_helper>"
           ARBOR_LIBARBOR="$<TARGET_FILE:arbor_sqlite>"
      DEPENDS test_vfs_helper arbor_sqlite)
  endforeach()
  if(TARGET arbor_open_example)
    target_compile_definitions(test_vfs_shell PRIVATE
      ARBOR_OPEN_EXAMPLE="$<TARGET_FILE:arbor_open_example>")
    add_dependencies(test_vfs_shell arbor_open_example)
  endif()
endif()

if(TARGET arbor-compute)
  # arbor-compute end to end: psql, pgbench, psycopg2, SQL over HTTP.
  arbor_integration_test(test_compute TIMEOUT 900 HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs BINS arbor-safekeeper arbor-pageserver arbor-compute)
  # libpq (libpq-dev) drives the protocol with command tags and SQLSTATEs.
  pkg_check_modules(LIBPQ IMPORTED_TARGET libpq)
  if(LIBPQ_FOUND)
    target_link_libraries(test_compute PRIVATE PkgConfig::LIBPQ)
    target_compile_definitions(test_compute PRIVATE ARBOR_HAVE_LIBPQ=1)
  endif()
  # Freshness: head = every acknowledged commit, lone-commit propagation,
  # read-your-writes (in-process VFS and compute endpoints).
  arbor_integration_test(test_fresh HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs PkgConfig::JANSSON BINS arbor-safekeeper arbor-pageserver arbor-compute)
  arbor_integration_test(test_ps_idle TIMEOUT 120 HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs PkgConfig::JANSSON BINS arbor-safekeeper arbor-pageserver arbor-compute)
  # Timelines loaded on first use, unloaded when idle, none at restart.
  arbor_integration_test(test_ps_lazy TIMEOUT 300 HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs PkgConfig::JANSSON BINS arbor-safekeeper arbor-pageserver arbor-compute)
endif()
