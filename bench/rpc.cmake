# RPC layer throughput/latency against a plain TCP ping-pong floor.
# Run: build/bench/bench_rpc [-d seconds_per_case] [-n max_calls] [-p]
add_executable(bench_rpc ${CMAKE_CURRENT_LIST_DIR}/bench_rpc.c)
target_link_libraries(bench_rpc PRIVATE arbor_rpc Threads::Threads)
