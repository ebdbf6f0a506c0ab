# compute/pgw.cmake: the PostgreSQL wire protocol server (pgw_*), included
# from compute/CMakeLists.txt. arbor_pgw serves SQL on any sqlite3* handed
# to it by a callback: arbor-compute links it with the arbor VFS; the tests
# serve plain SQLite files (tests/integration/pgw.cmake).
pkg_check_modules(LIBCRYPTO REQUIRED IMPORTED_TARGET GLOBAL libcrypto)

add_library(arbor_pgw STATIC
    ${CMAKE_CURRENT_LIST_DIR}/pgw_server.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_session.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_query.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_copy.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_ddl.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_proto.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_auth.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_sql.c
    ${CMAKE_CURRENT_LIST_DIR}/pgw_catalog.c)
target_include_directories(arbor_pgw PUBLIC ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(arbor_pgw PUBLIC arbor_common arbor_b64 arbor_sqltext PkgConfig::SQLITE Threads::Threads
                      PRIVATE PkgConfig::LIBCRYPTO)
