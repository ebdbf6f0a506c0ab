if(TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  # The clients people already use, against a real arbor-compute: libSQL's
  # Hrana over HTTP (raw JSON, then @libsql/client and Drizzle from npm).
  arbor_integration_test(test_hrana HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs PkgConfig::JANSSON
    BINS arbor-safekeeper arbor-pageserver arbor-compute
    DEFS ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")

  # PostgreSQL catalogs: psql's describe commands, information_schema, driver
  # handshakes.
  arbor_integration_test(test_pg_catalog HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs BINS arbor-safekeeper arbor-pageserver arbor-compute)

  # PostgreSQL drivers and ORMs: node-postgres (npm), SQLAlchemy + psycopg2
  # (Debian).
  arbor_integration_test(test_pg_drivers HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs BINS arbor-safekeeper arbor-pageserver arbor-compute
    DEFS ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
