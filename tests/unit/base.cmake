# arbor_base: log, alloc, fsutil, ids, config, metrics, http.
set(BASE_TEST_DIR ${CMAKE_CURRENT_SOURCE_DIR}/unit)

arbor_test(test_base_util SOURCES ${BASE_TEST_DIR}/test_base_util.c LIBS arbor_base)
arbor_test(test_base_pagebuf SOURCES ${BASE_TEST_DIR}/test_base_pagebuf.c LIBS arbor_base)
arbor_test(test_base_config SOURCES ${BASE_TEST_DIR}/test_base_config.c LIBS arbor_base)
arbor_test(test_base_metrics SOURCES ${BASE_TEST_DIR}/test_base_metrics.c LIBS arbor_base)
arbor_test(test_base_http SOURCES ${BASE_TEST_DIR}/test_base_http.c
           LIBS arbor_base PkgConfig::JANSSON TIMEOUT 60)
if(NOT ARBOR_SANITIZE)
  # Lets test_base_util insist that az_stats reports real numbers.
  target_compile_definitions(test_base_util PRIVATE ARBOR_JEMALLOC=1)
endif()

# compute/sql_text: the SQL text rules the PostgreSQL endpoint, SQL over
# HTTP, Hrana and the CLI share.
arbor_test(test_b64 SOURCES ${BASE_TEST_DIR}/test_b64.c LIBS arbor_b64)
if(TARGET arbor_sqltext)
  arbor_test(test_sql_text SOURCES ${BASE_TEST_DIR}/test_sql_text.c LIBS arbor_sqltext)
endif()
