# Pageserver storage engine: ingest throughput, GetPage latency, batched
# reads through io_uring vs one pread per page (the baseline, same run).
add_executable(bench_ps_storage ${CMAKE_CURRENT_LIST_DIR}/bench_ps_storage.c)
target_link_libraries(bench_ps_storage PRIVATE arbor_ps)

# Remote tier: ingest with upload on/off, GetPage resident vs evicted,
# attach of an empty pageserver (time to first read, to fully warm).
add_executable(bench_ps_remote ${CMAKE_CURRENT_LIST_DIR}/bench_ps_remote.c)
target_link_libraries(bench_ps_remote PRIVATE arbor_ps)
