# End-to-end test of the nnmpi-data tool (import-idx, import-csv, synth at 1-3 ranks, inspect,
# split). Included from tests/CMakeLists.txt, which defines NNMPI_MPIEXEC_PREFLAGS_STR.
add_test(NAME data_tool
         COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/data_tool_test.sh
                 $<TARGET_FILE:nnmpi-data> ${MPIEXEC_EXECUTABLE})
set_tests_properties(data_tool PROPERTIES
  TIMEOUT 300
  LABELS mpi
  ENVIRONMENT "NNMPI_MPIEXEC_NUMPROC_FLAG=${MPIEXEC_NUMPROC_FLAG};NNMPI_MPIEXEC_PREFLAGS=${NNMPI_MPIEXEC_PREFLAGS_STR}${NN_SANITIZER_ENV}")
