# arbor-control's lifecycle against a fake compute driver (no processes).
if(TARGET arbor_control)
  arbor_test(test_ctl_lc SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ctl_lc.c
             LIBS arbor_control PkgConfig::JANSSON TIMEOUT 60)
endif()

# arbor-control's state file: migrations from a version-5 file (fixture).
if(TARGET arbor_control)
  arbor_test(test_ctl_db SOURCES ${CMAKE_CURRENT_LIST_DIR}/test_ctl_db.c
             LIBS arbor_control PkgConfig::JANSSON PkgConfig::SQLITE TIMEOUT 60)
  target_compile_definitions(test_ctl_db PRIVATE
                             FIXTURE_DIR="${CMAKE_CURRENT_LIST_DIR}/fixtures")
endif()
