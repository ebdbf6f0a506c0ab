# arbor-control end to end: real safekeepers, pageserver, control plane and
# the computes it starts (test_control.c).
if(TARGET arbor-control AND TARGET arbor-compute AND TARGET arbor_vfs)
  arbor_integration_test(test_control TIMEOUT 300 HELPERS ${ARBOR_VFS_TEST_HELPERS}
    LIBS arbor_vfs arbor_http_client PkgConfig::JANSSON
    BINS arbor-safekeeper arbor-pageserver arbor-control arbor-compute
    DEFS ARBOR_OPENAPI_JSON="${PROJECT_SOURCE_DIR}/control/openapi.json")
endif()
