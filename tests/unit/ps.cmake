# Pageserver storage engine (pageserver/ps_*.c, library arbor_ps).
# Fixed seeds are printed; PS_TEST_SEED repeats a run, PS_TEST_SCALE
# (percent) shrinks the model tests for valgrind.
arbor_test(test_ps_model SOURCES unit/test_ps_model.c LIBS arbor_ps TIMEOUT 600)
arbor_test(test_ps_api SOURCES unit/test_ps_api.c LIBS arbor_ps TIMEOUT 300)
arbor_test(test_ps_crash SOURCES unit/test_ps_crash.c unit/pl_disk.c LIBS arbor_ps TIMEOUT 600)
arbor_test(test_ps_branch SOURCES unit/test_ps_branch.c LIBS arbor_ps TIMEOUT 600)
