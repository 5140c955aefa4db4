/* Partition arithmetic for the N-independent batch sequence (see shard.h). */
#include "nnmpi/shard.h"

#include "nnmpi/rng.h"

size_t nn_partition_begin(size_t n_rows, int P, int p) {
  /* floor(n*p/P) without overflow: n = q*P + r */
  size_t q = n_rows / (size_t)P, r = n_rows % (size_t)P;
  return q * (size_t)p + r * (size_t)p / (size_t)P;
}

/* Rows of a partition of `size` rows that are held out for validation. */
static size_t held_out(size_t size, double f) { return (size_t)((double)size * f); }

size_t nn_partition_val_begin(const nn_shard *s, int p) {
  size_t b = nn_partition_begin(s->n_rows, s->P, p), end = nn_partition_begin(s->n_rows, s->P, p + 1);
  return end - held_out(end - b, s->val_fraction);
}

int nn_shard_init(nn_shard *s, size_t n_rows, size_t batch, int P, int rank, int world,
                  double val_fraction, size_t chunk_rows, nn_error *e) {
  *s = (nn_shard){.n_rows = n_rows, .P = P, .val_fraction = val_fraction, .chunk_rows = chunk_rows};
  if (P < 1 || batch % (size_t)P != 0)
    return nn_fail(e, NN_ECONFIG, "[data] partitions = %d must divide [train] batch_size = %zu", P, batch);
  if (world > P)
    return nn_fail(e, NN_ECONFIG, "%d ranks but only %d partitions: every rank needs at least "
                   "one ([data] partitions must be at least the number of ranks, ideally a "
                   "multiple of it, and divide [train] batch_size)", world, P);
  if (n_rows < (size_t)world) /* some rank would get an empty shard */
    return nn_fail(e, NN_EDATA, "%d ranks but only %zu training samples", world, n_rows);
  s->rows_per_part_batch = batch / (size_t)P;
  if (chunk_rows < s->rows_per_part_batch)
    return nn_fail(e, NN_ECONFIG, "[data] chunk_rows = %zu is smaller than the %zu rows each partition "
                   "gives a batch (batch_size / partitions)", chunk_rows, s->rows_per_part_batch);
  size_t smallest = n_rows / (size_t)P; /* partition sizes differ by at most one row */
  smallest -= held_out(smallest, val_fraction); /* training rows never grow with fewer rows */
  s->steps = smallest / s->rows_per_part_batch;
  for (int p = 0; p < P; p++)
    s->val_rows += nn_partition_begin(n_rows, P, p + 1) - nn_partition_val_begin(s, p);
  if (s->steps == 0)
    return nn_fail(e, NN_ECONFIG, "[train] batch_size = %zu is larger than the training set "
                   "allows (%zu rows in %d partitions of at least %zu rows, %zu needed from each)",
                   batch, n_rows, P, smallest, s->rows_per_part_batch);
  s->p_first = (int)((long long)P * rank / world);
  s->p_count = (int)((long long)P * (rank + 1) / world) - s->p_first;
  s->row_begin = nn_partition_begin(n_rows, P, s->p_first);
  s->row_end = nn_partition_begin(n_rows, P, s->p_first + s->p_count);
  s->local_batch = (size_t)s->p_count * s->rows_per_part_batch;
  return 0;
}

size_t nn_shard_max_chunks(const nn_shard *s) {
  size_t most = 0;
  for (int j = 0; j < s->p_count; j++) {
    int p = s->p_first + j;
    size_t len = nn_partition_val_begin(s, p) - nn_partition_begin(s->n_rows, s->P, p);
    size_t nc = (len + s->chunk_rows - 1) / s->chunk_rows;
    if (nc > most) most = nc;
  }
  return most;
}

void nn_shard_order(size_t *order, size_t *scratch, const nn_shard *s, uint64_t seed, long epoch,
                    int shuffle) {
  size_t C = s->chunk_rows;
  for (int j = 0; j < s->p_count; j++) {
    int p = s->p_first + j;
    size_t b = nn_partition_begin(s->n_rows, s->P, p), len = nn_partition_val_begin(s, p) - b;
    size_t nc = (len + C - 1) / C, *o = order + (b - s->row_begin), at = 0;
    nn_rng r;
    nn_rng_init(&r, nn_rng_key(seed, (uint64_t)epoch, (uint64_t)p));
    for (size_t c = 0; c < nc; c++) scratch[c] = c;
    if (shuffle) nn_rng_shuffle(&r, scratch, nc); /* the order of the chunks ... */
    for (size_t k = 0; k < nc; k++) {
      size_t c0 = scratch[k] * C, n = len - c0 < C ? len - c0 : C;
      for (size_t i = 0; i < n; i++) o[at + i] = b - s->row_begin + c0 + i;
      if (shuffle) nn_rng_shuffle(&r, o + at, n); /* ... and the rows inside each chunk */
      at += n;
    }
  }
}

void nn_shard_batch_rows(size_t *rows, const nn_shard *s, const size_t *order, size_t k) {
  size_t bp = s->rows_per_part_batch, n = 0;
  for (int j = 0; j < s->p_count; j++) {
    size_t off = nn_partition_begin(s->n_rows, s->P, s->p_first + j) - s->row_begin;
    for (size_t i = 0; i < bp; i++) rows[n++] = order[off + k * bp + i];
  }
}

void nn_split_rows(size_t n, int rank, int world, size_t *begin, size_t *end) {
  *begin = nn_partition_begin(n, world, rank);
  *end = nn_partition_begin(n, world, rank + 1);
}
