/* nnmpi-sgemm-bench: the machine's single-precision GEMM ceiling through OpenBLAS.
 *
 * Times cblas_sgemm on a large square shape and on the shapes nnmpi's layers produce (forward
 * z = a W^T, weight gradient dW = delta^T a, and back-propagated delta a W), once with one BLAS
 * thread and once with one thread per online core. Every case is run several times; the best and
 * the median rate are printed (GFLOP/s = 2 M N K / seconds). With --json, one JSON object goes
 * to stdout instead of the table. This is a measurement tool, not a test: it always exits 0
 * unless the command line is bad or memory runs out.
 *
 *   nnmpi-sgemm-bench [--json] [--quick] [--reps N] [--threads LIST] [--shape MxNxK[:TT]]...
 *
 * --threads takes a comma-separated list (default "1,NPROC"). --shape replaces the default
 * cases; the optional suffix gives the transposes of A and B (N or T each, default NN).
 * OPENBLAS_CORETYPE picks the kernel (Debian's 0.3.21 takes AVX-512 CPUs for "Prescott").
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct gemm_case {
  char name[48];
  int m, n, k;
  int trans_a, trans_b; /* 0: NoTrans, 1: Trans */
} gemm_case;

typedef struct result {
  double best_s, median_s;
  int reps, inner;
} result;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n);
  if (!p) {
    fprintf(stderr, "nnmpi-sgemm-bench: out of memory (%zu bytes)\n", n);
    exit(1);
  }
  return p;
}

static void fill(float *x, size_t n, unsigned seed) {
  unsigned s = seed * 2654435761u + 1u;
  for (size_t i = 0; i < n; i++) {
    s = s * 1664525u + 1013904223u;
    x[i] = (float)((s >> 8) & 0xffff) / 65536.0f - 0.5f;
  }
}

static void run_gemm(const gemm_case *c, const float *A, const float *B, float *C) {
  /* Row-major, as nnmpi calls it. A is M x K (K x M if transposed), B is K x N (N x K). */
  int lda = c->trans_a ? c->m : c->k, ldb = c->trans_b ? c->k : c->n;
  cblas_sgemm(CblasRowMajor, c->trans_a ? CblasTrans : CblasNoTrans,
              c->trans_b ? CblasTrans : CblasNoTrans, c->m, c->n, c->k, 1.0f, A, lda, B, ldb, 0.0f,
              C, c->n);
}

/* One timing = `inner` back-to-back calls, with `inner` chosen so a timing lasts >= min_s. */
static result measure(const gemm_case *c, int reps, double min_s) {
  size_t na = (size_t)c->m * (size_t)c->k, nb = (size_t)c->k * (size_t)c->n,
         nc = (size_t)c->m * (size_t)c->n;
  float *A = xmalloc(na * sizeof *A), *B = xmalloc(nb * sizeof *B), *C = xmalloc(nc * sizeof *C);
  fill(A, na, 1), fill(B, nb, 2), memset(C, 0, nc * sizeof *C);
  double t0 = now();
  run_gemm(c, A, B, C); /* warm-up: thread start, page faults, packing buffers */
  double one = now() - t0;
  t0 = now();
  run_gemm(c, A, B, C);
  double again = now() - t0;
  if (again < one) one = again;
  int inner = 1;
  if (one > 0 && one < min_s) inner = (int)(min_s / one) + 1;
  if (inner > 100000) inner = 100000;
  double *t = xmalloc((size_t)reps * sizeof *t);
  for (int r = 0; r < reps; r++) {
    t0 = now();
    for (int i = 0; i < inner; i++) run_gemm(c, A, B, C);
    t[r] = (now() - t0) / inner;
  }
  qsort(t, (size_t)reps, sizeof *t, cmp_double);
  result res = {.best_s = t[0],
                .median_s = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]),
                .reps = reps, .inner = inner};
  free(t), free(A), free(B), free(C);
  return res;
}

static int parse_shape(const char *s, gemm_case *c) {
  char ta = 'N', tb = 'N';
  memset(c, 0, sizeof *c);
  int got = sscanf(s, "%dx%dx%d:%c%c", &c->m, &c->n, &c->k, &ta, &tb);
  if (got != 3 && got != 5) return -1;
  if (c->m <= 0 || c->n <= 0 || c->k <= 0) return -1;
  if ((ta != 'N' && ta != 'T') || (tb != 'N' && tb != 'T')) return -1;
  c->trans_a = ta == 'T', c->trans_b = tb == 'T';
  snprintf(c->name, sizeof c->name, "custom");
  return 0;
}

static void usage(FILE *f) {
  fprintf(f, "usage: nnmpi-sgemm-bench [--json] [--quick] [--reps N] [--threads LIST] "
             "[--shape MxNxK[:TT]]...\n");
}

int main(int argc, char **argv) {
  int json = 0, quick = 0, reps = 0;
  long nproc = sysconf(_SC_NPROCESSORS_ONLN);
  if (nproc < 1) nproc = 1;
  int threads[16], n_threads = 0;
  gemm_case custom[32];
  int n_custom = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json")) json = 1;
    else if (!strcmp(argv[i], "--quick")) quick = 1;
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
      reps = atoi(argv[++i]);
      if (reps < 1) { usage(stderr); return 2; }
    } else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      char *list = argv[++i], *save = NULL;
      for (char *tok = strtok_r(list, ",", &save); tok && n_threads < 16; tok = strtok_r(NULL, ",", &save)) {
        int t = atoi(tok);
        if (t < 1) { usage(stderr); return 2; }
        threads[n_threads++] = t;
      }
    } else if (!strcmp(argv[i], "--shape") && i + 1 < argc && n_custom < 32) {
      if (parse_shape(argv[++i], &custom[n_custom++])) { usage(stderr); return 2; }
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      usage(stdout);
      return 0;
    } else {
      usage(stderr);
      return 2;
    }
  }
  if (!n_threads) {
    threads[n_threads++] = 1;
    if (nproc > 1) threads[n_threads++] = (int)nproc;
  }
  if (!reps) reps = quick ? 3 : 7;
  double min_s = quick ? 0.02 : 0.05;

  /* The default cases: a large square GEMM, then the per-layer shapes of nnmpi's MLPs. */
  static const gemm_case defaults[] = {
      {"square 2048^3", 2048, 2048, 2048, 0, 0},
      {"wide fwd B=256 4096x4096", 256, 4096, 4096, 0, 1},  /* z = a W^T   */
      {"wide dW B=256 4096x4096", 4096, 4096, 256, 1, 0},   /* dW = d^T a  */
      {"wide bwd B=256 4096x4096", 256, 4096, 4096, 0, 0},  /* d' = d W    */
      {"fmnist fwd B=128 784->256", 128, 256, 784, 0, 1},
      {"fmnist fwd B=512 784->256", 512, 256, 784, 0, 1},
      /* what one of 2 ranks computes for the wide model's 4096x4096 layer at global batch 256
       * with [train] allreduce = shm: half of the layer's units for all 256 rows (nn_node_step;
       * the bwd case's W columns are a slice with ld 4096 there). scripts/bench derives from
       * these the most that -np 2 can reach from its GEMMs alone. */
      {"wide fwd R=256 half (rank of 2)", 256, 2048, 4096, 0, 1},
      {"wide dW R=256 half (rank of 2)", 2048, 4096, 256, 1, 0},
      {"wide bwd R=256 half (rank of 2)", 256, 2048, 4096, 0, 0},
  };
  const gemm_case *cases = n_custom ? custom : defaults;
  int n_cases = n_custom ? n_custom : (int)(sizeof defaults / sizeof defaults[0]);
  if (quick && !n_custom) n_cases = 5; /* skip the B=512 fmnist and the per-rank wide cases */

  const char *core = openblas_get_corename();
  const char *cfg = openblas_get_config();
  const char *coretype = getenv("OPENBLAS_CORETYPE");
  if (json) {
    printf("{\"tool\":\"nnmpi-sgemm-bench\",\"openblas_core\":\"%s\",\"openblas_config\":\"%s\","
           "\"openblas_coretype_env\":%s%s%s,\"nproc\":%ld,\"reps\":%d,\"cases\":[",
           core, cfg, coretype ? "\"" : "", coretype ? coretype : "null", coretype ? "\"" : "", nproc, reps);
  } else {
    printf("# OpenBLAS core %s (%s), OPENBLAS_CORETYPE=%s, %ld online cores, %d reps per case\n", core,
           cfg, coretype ? coretype : "(unset)", nproc, reps);
    printf("%-28s %6s %6s %6s %2s %7s %10s %10s %10s\n", "case", "M", "N", "K", "TT", "threads",
           "best_GF/s", "median_GF/s", "best_ms");
  }
  double ceiling[16] = {0};
  int first = 1;
  for (int ti = 0; ti < n_threads; ti++) {
    openblas_set_num_threads(threads[ti]);
    for (int ci = 0; ci < n_cases; ci++) {
      const gemm_case *c = &cases[ci];
      result r = measure(c, reps, min_s);
      double flop = 2.0 * c->m * (double)c->n * c->k;
      double best = flop / r.best_s * 1e-9, med = flop / r.median_s * 1e-9;
      if (best > ceiling[ti]) ceiling[ti] = best;
      if (json) {
        printf("%s{\"name\":\"%s\",\"m\":%d,\"n\":%d,\"k\":%d,\"trans\":\"%c%c\",\"threads\":%d,"
               "\"reps\":%d,\"calls_per_rep\":%d,\"best_s\":%.6g,\"median_s\":%.6g,"
               "\"gflops_best\":%.3f,\"gflops_median\":%.3f}",
               first ? "" : ",", c->name, c->m, c->n, c->k, c->trans_a ? 'T' : 'N',
               c->trans_b ? 'T' : 'N', threads[ti], r.reps, r.inner, r.best_s, r.median_s, best, med);
        first = 0;
      } else {
        printf("%-28s %6d %6d %6d %c%c %7d %10.1f %10.1f %10.3f\n", c->name, c->m, c->n, c->k,
               c->trans_a ? 'T' : 'N', c->trans_b ? 'T' : 'N', threads[ti], best, med, 1e3 * r.best_s);
      }
      fflush(stdout);
    }
  }
  if (json) {
    printf("],\"ceiling_gflops\":{");
    for (int ti = 0; ti < n_threads; ti++)
      printf("%s\"%d\":%.3f", ti ? "," : "", threads[ti], ceiling[ti]);
    printf("}}\n");
  } else {
    for (int ti = 0; ti < n_threads; ti++)
      printf("# ceiling with %d thread%s: %.1f GFLOP/s (best over the cases)\n", threads[ti],
             threads[ti] > 1 ? "s" : "", ceiling[ti]);
  }
  return 0;
}
