# arbor-proxy end to end: `arbor start` in a temporary directory (the proxy
# with the rest), clients through libpq (test_proxy.c).
pkg_check_modules(LIBPQ IMPORTED_TARGET libpq)
if(TARGET arbor AND TARGET arbor-proxy AND LIBPQ_FOUND)
  arbor_test(test_proxy
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_proxy.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS arbor_http_client PkgConfig::LIBPQ PkgConfig::JANSSON Threads::Threads
             TIMEOUT 300 LABELS integration)
  target_include_directories(test_proxy PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_proxy PRIVATE ARBOR_CLI_BIN="$<TARGET_FILE:arbor>"
                             PG_RAWCLIENT="${CMAKE_CURRENT_LIST_DIR}/pg_rawclient.py")
  add_dependencies(test_proxy arbor arbor-proxy arbor-control arbor-compute
                   arbor-safekeeper arbor-pageserver)
endif()

# The proxy's HTTP door, limits and compute secrets (test_proxy_http.c),
# with @libsql/client from npm (tests/hrana/libsql_proxy_test.mjs; skipped
# when npm cannot install it).
if(TARGET arbor AND TARGET arbor-proxy AND LIBPQ_FOUND)
  if(NOT TARGET PkgConfig::CURL)
    pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
  endif()
  arbor_test(test_proxy_http
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_proxy_http.c
                     ${CMAKE_CURRENT_LIST_DIR}/cli_test_common.c
             LIBS PkgConfig::CURL PkgConfig::LIBPQ PkgConfig::JANSSON Threads::Threads
                  arbor_b64
             TIMEOUT 300 LABELS integration)
  target_include_directories(test_proxy_http PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_proxy_http PRIVATE ARBOR_CLI_BIN="$<TARGET_FILE:arbor>"
                             ARBOR_PROXY_BIN="$<TARGET_FILE:arbor-proxy>"
                             ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
  add_dependencies(test_proxy_http arbor arbor-proxy arbor-control arbor-compute
                   arbor-safekeeper arbor-pageserver)
endif()
