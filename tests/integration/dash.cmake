# Dashboards: the Prometheus text of every daemon (strict parser, series move
# under load), the Grafana dashboard against it, and the web dashboard in
# headless Chromium. Real processes: a local cluster by `arbor start` plus a
# compute endpoint.
if(TARGET arbor AND TARGET arbor-compute AND TARGET arbor_dashboard_assets)
  foreach(t test_metrics test_deploy_metrics)
    arbor_integration_test(${t} TIMEOUT 300 HELPERS test_metrics_common.c harness.c
      LIBS PkgConfig::JANSSON BINS arbor arbor-compute
      DEFS ARBOR_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
      DEPENDS arbor-safekeeper arbor-pageserver)
  endforeach()

  # The dashboard server alone (cli_dashboard_run), for the browser test.
  add_executable(arbor_dashboard_serve ${PROJECT_SOURCE_DIR}/tests/dashboard/dash_serve.c)
  target_link_libraries(arbor_dashboard_serve PRIVATE arbor_cli arbor_dashboard_assets)
  find_program(NODE_BIN node)
  find_program(NPM_BIN npm)
  if(NODE_BIN AND NPM_BIN)
    arbor_integration_test(test_dashboard TIMEOUT 300 SKIP_RETURN_CODE 77
      COMMAND ${NODE_BIN} ${PROJECT_SOURCE_DIR}/tests/dashboard/dashboard_test.mjs
      ENV ARBOR_CLI_BIN=$<TARGET_FILE:arbor>
          ARBOR_COMPUTE_BIN=$<TARGET_FILE:arbor-compute>
          ARBOR_DASHBOARD_BIN=$<TARGET_FILE:arbor_dashboard_serve>
          ARBOR_ARTIFACT_DIR=${CMAKE_BINARY_DIR}/test-artifacts
          NPM_BIN=${NPM_BIN})
    add_dependencies(arbor_dashboard_serve arbor arbor-compute)
  endif()
endif()
