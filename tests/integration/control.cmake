# arbor-control end to end: real safekeepers, pageserver, control plane and
# the computes it starts (test_control.c).
if(TARGET arbor-control AND TARGET arbor-compute AND TARGET arbor_vfs)
  arbor_test(test_control
             SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_control.c
                     ${CMAKE_CURRENT_LIST_DIR}/test_vfs_common.c
                     ${CMAKE_CURRENT_LIST_DIR}/harness.c
                     ${CMAKE_CURRENT_LIST_DIR}/ps_test_client.c
             LIBS arbor_vfs arbor_http_client PkgConfig::JANSSON TIMEOUT 300
             LABELS integration)
  target_include_directories(test_control PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_compile_definitions(test_control PRIVATE
    ARBOR_SAFEKEEPER_BIN="$<TARGET_FILE:arbor-safekeeper>"
    ARBOR_PAGESERVER_BIN="$<TARGET_FILE:arbor-pageserver>"
    ARBOR_CONTROL_BIN="$<TARGET_FILE:arbor-control>"
    ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>"
    ARBOR_OPENAPI_JSON="${PROJECT_SOURCE_DIR}/control/openapi.json")
  add_dependencies(test_control arbor-safekeeper arbor-pageserver arbor-control arbor-compute)
endif()
