# arbor-proxy's modules (proxy/, library arbor_proxy).
if(TARGET arbor_proxy)
  arbor_test(test_px_pool SOURCES unit/test_px_pool.c LIBS arbor_proxy TIMEOUT 60)
endif()
