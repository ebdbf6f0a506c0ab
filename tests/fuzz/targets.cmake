# The fuzz targets besides fuzz_wal: tests/fuzz/fuzz_<name>.c, corpus in
# tests/fuzz/corpus/<name>, linked with ARBOR_FUZZ_LIBS_<name>. Included by
# fuzz.cmake (libFuzzer binaries, ARBOR_FUZZ=ON) and tests/unit/fuzz.cmake
# (corpus replay as ctest test_fuzz_<name>_corpus in every build).
set(ARBOR_FUZZ_TARGETS sk_control sk_wal ps_layer ps_meta pgw http_sql grpc_msgs proxy)
set(ARBOR_FUZZ_LIBS_sk_control arbor_sk)
set(ARBOR_FUZZ_LIBS_ps_layer arbor_ps)
set(ARBOR_FUZZ_LIBS_pgw arbor_pgw)
set(ARBOR_FUZZ_LIBS_http_sql arbor_sqh)
set(ARBOR_FUZZ_LIBS_grpc_msgs arbor_proto)
set(ARBOR_FUZZ_LIBS_sk_wal arbor_sk)
set(ARBOR_FUZZ_LIBS_ps_meta arbor_ps)
# arbor_proxy exists only where its dependencies do (proxy/CMakeLists.txt);
# without it the target is left out rather than breaking the build.
set(ARBOR_FUZZ_LIBS_proxy arbor_proxy arbor_sqh)
if(NOT TARGET arbor_proxy)
  list(REMOVE_ITEM ARBOR_FUZZ_TARGETS proxy)
endif()
