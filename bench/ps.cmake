# Pageserver storage engine: ingest throughput, GetPage latency, batched
# reads through io_uring vs one pread per page (the baseline, same run).
add_executable(bench_ps_storage ${CMAKE_CURRENT_LIST_DIR}/bench_ps_storage.c)
target_link_libraries(bench_ps_storage PRIVATE arbor_ps)
