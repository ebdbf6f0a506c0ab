# The clients people already use, against a real arbor-compute: libSQL's
# Hrana over HTTP (raw JSON, then @libsql/client and Drizzle from npm).
if(TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  arbor_test(test_hrana
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_hrana.c
                     ${CMAKE_CURRENT_LIST_DIR}/test_vfs_common.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_vfs PkgConfig::JANSSON TIMEOUT 600 LABELS integration)
  target_include_directories(test_hrana PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_hrana PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
    ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>"
    ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_dependencies(test_hrana arbor-safekeeper arbor-pageserver arbor-compute)
endif()

# PostgreSQL catalogs: psql's describe commands, information_schema, driver
# handshakes.
if(TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  arbor_test(test_pg_catalog
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pg_catalog.c
                     ${CMAKE_CURRENT_LIST_DIR}/test_vfs_common.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_vfs TIMEOUT 600 LABELS integration)
  target_include_directories(test_pg_catalog PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_pg_catalog PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
    ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>")
  add_dependencies(test_pg_catalog arbor-safekeeper arbor-pageserver arbor-compute)
endif()

# PostgreSQL drivers and ORMs: node-postgres (npm), SQLAlchemy + psycopg2
# (Debian).
if(TARGET arbor-compute AND TARGET arbor-pageserver AND TARGET arbor-safekeeper)
  arbor_test(test_pg_drivers
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_pg_drivers.c
                     ${CMAKE_CURRENT_LIST_DIR}/test_vfs_common.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_vfs TIMEOUT 600 LABELS integration)
  target_include_directories(test_pg_drivers PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_pg_drivers PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
    ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>"
    ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_dependencies(test_pg_drivers arbor-safekeeper arbor-pageserver arbor-compute)
endif()
