/* nnmpi-allreduce-bench: MPI_Allreduce(MPI_SUM, float) time against message size.
 *
 * For every size from --min bytes to --max bytes (factor 2 apart, plus --max itself), the ranks
 * run --trials timed trials; a trial is `inner` back-to-back allreduces on the same buffer, with
 * `inner` chosen (the same on every rank) so a trial lasts about --trial-ms. The time of a trial
 * is the slowest rank's, per call. The minimum and the median over trials are printed, one line
 * per size, or one JSON object with --json. This is the operation nnmpi runs once per step on its
 * flat gradient, with the heap set up as nnmpi sets it (nn_comm_prepare_heap); --default-heap
 * keeps glibc's defaults instead. Measurement only: exits 0 unless the command line is bad.
 *
 * Above 8 KiB each size is 0.9 of its power of two (rounded to whole floats), since messages of
 * exactly 2^k bytes are a slow special case of Open MPI 4.1's shared-memory allreduce here: on 2
 * ranks of the development VM, 1048576 B took 547-553 us, 1044480 B or 1048580 B 105-119 us, and
 * nnmpi's own 940584 B gradient 104-106 us. Gradients are seldom exact powers of two; for those
 * sizes, --powers-of-two measures the exact powers.
 *
 *   mpirun -np 2 nnmpi-allreduce-bench [--json] [--min BYTES] [--max BYTES] [--trials N]
 *                                      [--trial-ms MS] [--default-heap] [--powers-of-two]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnmpi/comm.h"

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int default_heap = 0; /* --default-heap: glibc's defaults, to show what nn_comm_prepare_heap gains */
  int powers = 0;       /* --powers-of-two: exact 2^k sizes above 8 KiB too */
  for (int i = 1; i < argc; i++) default_heap |= !strcmp(argv[i], "--default-heap");
  if (!default_heap) nn_comm_prepare_heap(); /* as nnmpi does */
  MPI_Init(&argc, &argv);
  int rank, world;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  int json = 0, trials = 7;
  double min_b = 4, max_b = 100e6, trial_ms = 20;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--default-heap")) continue;
    else if (!strcmp(argv[i], "--powers-of-two")) powers = 1;
    else if (!strcmp(argv[i], "--min") && i + 1 < argc) min_b = atof(argv[++i]);
    else if (!strcmp(argv[i], "--max") && i + 1 < argc) max_b = atof(argv[++i]);
    else if (!strcmp(argv[i], "--trials") && i + 1 < argc) trials = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--trial-ms") && i + 1 < argc) trial_ms = atof(argv[++i]);
    else {
      if (rank == 0)
        fprintf(stderr, "usage: nnmpi-allreduce-bench [--json] [--min BYTES] [--max BYTES] "
                        "[--trials N] [--trial-ms MS] [--default-heap] [--powers-of-two]\n");
      MPI_Finalize();
      return 2;
    }
  }
  if (min_b < 4) min_b = 4;
  if (max_b < min_b) max_b = min_b;
  if (trials < 1) trials = 1;
  size_t max_n = (size_t)(max_b / 4);
  float *buf = malloc(max_n * sizeof *buf);
  double *t = malloc((size_t)trials * sizeof *t);
  if (!buf || !t) {
    fprintf(stderr, "nnmpi-allreduce-bench: out of memory\n");
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (size_t i = 0; i < max_n; i++) buf[i] = 0; /* sums of zeros stay finite, call after call */

  if (json && rank == 0) printf("{\"tool\":\"nnmpi-allreduce-bench\",\"ranks\":%d,\"op\":\"MPI_SUM/MPI_FLOAT\",\"size_rule\":\"%s\",\"sizes\":[",
                             world, powers ? "--min x 2^k, and --max" : "--min x 2^k, x 0.9 above 8 KiB, and --max as given");
  else if (rank == 0) printf("# MPI_Allreduce(SUM, float) on %d ranks: time per call, slowest rank\n%12s %8s %12s %12s %10s\n",
                             world, "bytes", "calls", "min_us", "median_us", "GB/s(min)");
  int first = 1;
  for (double b = min_b;; b = b * 2 > max_b && b < max_b ? max_b : b * 2) {
    size_t n = (size_t)(b / 4);
    if (!powers && b > 8192 && b < max_b) n = (size_t)(0.9 * b / 4); /* see the top of this file */
    if (n < 1) n = 1;
    /* Warm-up, then agree on the number of calls per trial from the slowest rank's estimate. */
    MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    /* Estimate: calls for at least 2 ms (at most 1000); rank 0 decides when to stop. */
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    int calls = 0, more = 1;
    while (more) {
      MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      calls++;
      more = MPI_Wtime() - t0 < 2e-3 && calls < 1000;
      MPI_Bcast(&more, 1, MPI_INT, 0, MPI_COMM_WORLD);
    }
    double one = (MPI_Wtime() - t0) / calls;
    MPI_Allreduce(MPI_IN_PLACE, &one, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    int inner = one > 0 ? (int)(trial_ms * 1e-3 / one) : 1000;
    if (inner < 1) inner = 1;
    if (inner > 20000) inner = 20000;
    for (int r = 0; r < trials; r++) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = MPI_Wtime();
      for (int i = 0; i < inner; i++)
        MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      double dt = (MPI_Wtime() - t0) / inner;
      MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
      t[r] = dt;
    }
    qsort(t, (size_t)trials, sizeof *t, cmp_double);
    double med = trials % 2 ? t[trials / 2] : 0.5 * (t[trials / 2 - 1] + t[trials / 2]);
    double bytes = 4.0 * (double)n;
    if (rank == 0) {
      if (json) {
        printf("%s{\"bytes\":%.0f,\"calls_per_trial\":%d,\"trials\":%d,\"min_s\":%.6g,\"median_s\":%.6g}",
               first ? "" : ",", bytes, inner, trials, t[0], med);
      } else {
        printf("%12.0f %8d %12.2f %12.2f %10.3f\n", bytes, inner, 1e6 * t[0], 1e6 * med,
               bytes / t[0] * 1e-9);
      }
      fflush(stdout);
    }
    first = 0;
    if (b >= max_b) break;
  }
  if (json && rank == 0) printf("]}\n");
  free(buf), free(t);
  MPI_Finalize();
  return 0;
}
