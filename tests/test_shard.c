/* The batch sequence must not depend on the number of ranks: for every step, the union over
 * ranks of the rows used is the same set at N = 1..5, each row is used at most once an epoch,
 * and the ranks' row ranges tile the file. */
#include <stdlib.h>

#include "nnmpi/shard.h"
#include "test.h"

enum { MAX_ROWS = 1000 };

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

/* Global rows of step k over all ranks of a world of size N, sorted, into out (returns count). */
static size_t step_rows(size_t *out, size_t n_rows, size_t B, int P, int N, int shuffle, long epoch, size_t k, double val, size_t chunk) {
  size_t count = 0, *order = malloc(n_rows * sizeof *order), *rows = malloc(B * sizeof *rows);
  for (int r = 0; r < N; r++) {
    nn_shard s;
    nn_error e = {0};
    CHECK_INT(nn_shard_init(&s, n_rows, B, P, r, N, val, chunk, &e), 0);
    size_t scratch[MAX_ROWS];
    CHECK(nn_shard_max_chunks(&s) <= MAX_ROWS);
    nn_shard_order(order, scratch, &s, 42, epoch, shuffle);
    nn_shard_batch_rows(rows, &s, order, k);
    for (size_t i = 0; i < s.local_batch; i++) out[count++] = s.row_begin + rows[i];
  }
  qsort(out, count, sizeof *out, cmp_size);
  free(order);
  free(rows);
  return count;
}

static void test_independent_of_world(size_t n_rows, size_t B, int P, int shuffle, double val, size_t chunk) {
  nn_shard s1;
  nn_error e = {0};
  CHECK_INT(nn_shard_init(&s1, n_rows, B, P, 0, 1, val, chunk, &e), 0);
  size_t ref[MAX_ROWS], got[MAX_ROWS];
  char held[MAX_ROWS] = {0};
  size_t n_held = 0;
  for (int p = 0; p < P; p++)
    for (size_t r = nn_partition_val_begin(&s1, p); r < nn_partition_begin(n_rows, P, p + 1); r++) held[r] = 1, n_held++;
  CHECK_INT(n_held, s1.val_rows);
  if (val > 0) CHECK(n_held >= (size_t)(val * (double)n_rows) - (size_t)P && n_held <= (size_t)(val * (double)n_rows));
  for (long epoch = 1; epoch <= 2; epoch++) {
    char seen[MAX_ROWS] = {0};
    for (size_t k = 0; k < s1.steps; k++) {
      CHECK_INT(step_rows(ref, n_rows, B, P, 1, shuffle, epoch, k, val, chunk), B);
      for (size_t i = 0; i < B; i++) {
        CHECK(ref[i] < n_rows);
        CHECK(!seen[ref[i]]); /* at most once an epoch */
        CHECK(!held[ref[i]]);  /* never a validation row */
        seen[ref[i]] = 1;
      }
      for (int N = 2; N <= 5 && N <= P; N++) {
        CHECK_INT(step_rows(got, n_rows, B, P, N, shuffle, epoch, k, val, chunk), B);
        CHECK(memcmp(ref, got, B * sizeof *ref) == 0);
      }
    }
  }
  /* Shuffling changes the order from epoch to epoch; no shuffling keeps the identity. */
  step_rows(ref, n_rows, B, P, 1, shuffle, 1, 0, val, chunk);
  step_rows(got, n_rows, B, P, 1, shuffle, 2, 0, val, chunk);
  CHECK_INT(memcmp(ref, got, B * sizeof *ref) != 0, shuffle);
}

/* With chunks, an epoch visits each chunk's rows together: consecutive positions of the order
 * stay inside one chunk until it is used up; the chunk order and the row order both change. */
static void test_chunk_order(void) {
  nn_shard s;
  nn_error e = {0};
  size_t order[100], scratch[100];
  CHECK_INT(nn_shard_init(&s, 100, 2, 1, 0, 1, 0, 8, &e), 0); /* one partition, chunks of 8 */
  CHECK_INT(nn_shard_max_chunks(&s), 13);
  nn_shard_order(order, scratch, &s, 1, 1, 1);
  char seen[100] = {0};
  size_t at = 0, moved = 0;
  while (at < 100) {
    size_t chunk = order[at] / 8, n = chunk == 12 ? 4 : 8;
    for (size_t i = 0; i < n; i++) {
      CHECK_INT(order[at + i] / 8, chunk);
      CHECK(!seen[order[at + i]]);
      seen[order[at + i]] = 1;
      moved += order[at + i] != at + i;
    }
    at += n;
  }
  CHECK(moved > 50);
  nn_shard_order(order, scratch, &s, 1, 1, 0);
  for (size_t i = 0; i < 100; i++) CHECK_INT(order[i], i);
}

static void test_ranges_tile(void) {
  for (int N = 1; N <= 7; N++) {
    size_t expect = 0;
    for (int r = 0; r < N; r++) {
      nn_shard s;
      nn_error e = {0};
      CHECK_INT(nn_shard_init(&s, 1003, 56, 28, r, N, 0, 4096, &e), 0);
      CHECK_INT(s.row_begin, expect);
      expect = s.row_end;
      CHECK_INT(s.local_batch, (size_t)s.p_count * 2);
    }
    CHECK_INT(expect, 1003);
  }
  for (int N = 1; N <= 9; N++) { /* evaluation split: any N, no gaps, no overlap */
    size_t expect = 0, b, end;
    for (int r = 0; r < N; r++) {
      nn_split_rows(10, r, N, &b, &end);
      CHECK_INT(b, expect);
      expect = end;
    }
    CHECK_INT(expect, 10);
  }
  CHECK_INT(nn_partition_begin((size_t)1 << 40, 1 << 20, 3), (((size_t)1 << 40) >> 20) * 3);
}

static void test_errors(void) {
  nn_shard s;
  nn_error e = {0};
  CHECK_INT(nn_shard_init(&s, 1000, 64, 5, 0, 1, 0, 4096, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "must divide");
  e = (nn_error){0};
  CHECK_INT(nn_shard_init(&s, 1000, 64, 4, 0, 8, 0, 4096, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "8 ranks but only 4 partitions");
  e = (nn_error){0};
  CHECK_INT(nn_shard_init(&s, 3, 4, 4, 0, 4, 0, 4096, &e), NN_EDATA);
  CHECK_STR_CONTAINS(e.msg, "4 ranks but only 3 training samples");
  e = (nn_error){0};
  CHECK_INT(nn_shard_init(&s, 100, 128, 64, 0, 1, 0, 4096, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "batch_size = 128 is larger than the training set allows");
  e = (nn_error){0};
  CHECK_INT(nn_shard_init(&s, 1000, 64, 4, 0, 1, 0, 8, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "chunk_rows = 8 is smaller than the 16 rows");
}

int main(void) {
  test_independent_of_world(1000, 48, 12, 0, 0, 4096);
  test_independent_of_world(1000, 48, 12, 1, 0, 4096);
  test_independent_of_world(997, 40, 8, 1, 0, 4096); /* uneven partitions, N = 3, 5 uneven ownership */
  test_independent_of_world(997, 40, 8, 1, 0.15, 4096); /* with a validation hold-out */
  test_independent_of_world(997, 40, 8, 1, 0, 7);  /* chunked shuffling, a short last chunk */
  test_chunk_order();
  test_ranges_tile();
  test_errors();
  TEST_MAIN_END();
}
