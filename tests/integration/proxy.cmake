# arbor-proxy end to end: `arbor start` in a temporary directory (the proxy
# with the rest), clients through libpq (test_proxy.c).
pkg_check_modules(LIBPQ IMPORTED_TARGET libpq)
if(TARGET arbor AND TARGET arbor-proxy AND LIBPQ_FOUND)
  arbor_integration_test(test_proxy TIMEOUT 300 HELPERS cli_test_common.c
    LIBS arbor_http_client PkgConfig::LIBPQ PkgConfig::JANSSON Threads::Threads
    BINS arbor DEFS PG_RAWCLIENT="${CMAKE_CURRENT_LIST_DIR}/pg_rawclient.py"
    DEPENDS arbor-proxy arbor-control arbor-compute arbor-safekeeper arbor-pageserver)
endif()

# The proxy's HTTP door, limits and compute secrets (test_proxy_http.c),
# with @libsql/client from npm (tests/hrana/libsql_proxy_test.mjs; skipped
# when npm cannot install it).
if(TARGET arbor AND TARGET arbor-proxy AND LIBPQ_FOUND)
  if(NOT TARGET PkgConfig::CURL)
    pkg_check_modules(CURL REQUIRED IMPORTED_TARGET libcurl)
  endif()
  arbor_integration_test(test_proxy_http TIMEOUT 300 HELPERS cli_test_common.c
    LIBS PkgConfig::CURL PkgConfig::LIBPQ PkgConfig::JANSSON Threads::Threads arbor_b64
    BINS arbor arbor-proxy DEFS ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
    DEPENDS arbor-control arbor-compute arbor-safekeeper arbor-pageserver)
endif()
