# Dashboards: the Prometheus text of every daemon (strict parser, series move
# under load), the Grafana dashboard against it, and the web dashboard in
# headless Chromium. Real processes: a local cluster by `arbor start` plus a
# compute endpoint.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor_dashboard_assets)
  foreach(t test_metrics test_deploy_metrics)
    arbor_test(${t}
               SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.c
                       ${CMAKE_CURRENT_LIST_DIR}/test_metrics_common.c
                       ${CMAKE_CURRENT_LIST_DIR}/harness.c
               LIBS PkgConfig::JANSSON TIMEOUT 300 LABELS integration)
    target_include_directories(${t} PRIVATE ${CMAKE_CURRENT_LIST_DIR})
    target_compile_definitions(${t} PRIVATE
      ARBOR_CLI_BIN="$<TARGET_FILE:arbor>"
      ARBOR_COMPUTE_BIN="$<TARGET_FILE:arbor-compute>"
      ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
    add_dependencies(${t} arbor arbor-safekeeper arbor-pageserver arbor-compute)
  endforeach()

  # The dashboard server alone (cli_dashboard_run), for the browser test.
  add_executable(arbor_dashboard_serve ${PROJECT_SOURCE_DIR}/tests/dashboard/dash_serve.c)
  target_link_libraries(arbor_dashboard_serve PRIVATE arbor_cli arbor_dashboard_assets)
  find_program(NODE_BIN node)
  find_program(NPM_BIN npm)
  if(NODE_BIN AND NPM_BIN)
    add_test(NAME test_dashboard
             COMMAND ${NODE_BIN} ${PROJECT_SOURCE_DIR}/tests/dashboard/dashboard_test.mjs)
    set_tests_properties(test_dashboard PROPERTIES TIMEOUT 300 LABELS integration
      SKIP_RETURN_CODE 77
      ENVIRONMENT "ARBOR_CLI_BIN=$<TARGET_FILE:arbor>;ARBOR_COMPUTE_BIN=$<TARGET_FILE:arbor-compute>;ARBOR_DASHBOARD_BIN=$<TARGET_FILE:arbor_dashboard_serve>;ARBOR_ARTIFACT_DIR=${CMAKE_BINARY_DIR}/test-artifacts;NPM_BIN=${NPM_BIN}")
    add_dependencies(arbor_dashboard_serve arbor arbor-compute)
  endif()
endif()
