# arbor-control's lifecycle against a fake compute driver (no processes).
if(TARGET arbor_control)
  arbor_test(test_ctl_lc SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ctl_lc.c
             LIBS arbor_control PkgConfig::JANSSON TIMEOUT 60)
endif()
