/* Which rows each rank reads and which rows make each global batch. Pure arithmetic: ranks
 * and world size are plain ints, so every rule here is testable in one process.
 *
 * The training rows are cut into P contiguous partitions (partition p holds rows
 * [n*p/P, n*(p+1)/P)). Global batch k takes B/P rows from every partition: rows
 * order_p[k*B/P .. (k+1)*B/P) where order_p is the identity, or a permutation seeded by
 * (seed, epoch, p) when shuffling: the partition's rows are cut into chunks of chunk_rows rows,
 * and an epoch visits the chunks in a shuffled order and the rows of each chunk in a shuffled
 * order (a chunk can then be streamed from disk as one contiguous read). Rank r owns partitions [P*r/N, P*(r+1)/N). The set of rows
 * in each global batch therefore depends only on (data, B, P, seed, epoch), never on N.
 * With a validation fraction f, the last floor(f * size) rows of every partition are held out
 * for validation and never trained on: the same rows whatever N. */
#ifndef NNMPI_SHARD_H
#define NNMPI_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "nnmpi/error.h"

typedef struct nn_shard {
  size_t n_rows;      /* rows in the whole file */
  int P;              /* partitions */
  size_t rows_per_part_batch; /* B / P */
  size_t steps;       /* global batches per epoch */
  int p_first, p_count;       /* partitions owned by this rank */
  size_t row_begin, row_end;  /* rows of the file this rank reads: [row_begin, row_end) */
  size_t local_batch; /* rows this rank processes per step: p_count * B / P */
  double val_fraction;
  size_t val_rows;    /* validation rows in the whole file */
  size_t chunk_rows;  /* rows of a shuffling chunk (>= B/P) */
} nn_shard;

/* First row of partition p (p may be P, giving n_rows). */
size_t nn_partition_begin(size_t n_rows, int P, int p);

/* Plan the rank's share. Fails (NN_ECONFIG) when P does not divide B, when there are more
 * ranks than partitions, or when the smallest partition is smaller than B/P rows. */
int nn_shard_init(nn_shard *s, size_t n_rows, size_t batch, int P, int rank, int world,
                  double val_fraction, size_t chunk_rows, nn_error *e);

/* First validation row of partition p (the end of its training rows). */
size_t nn_partition_val_begin(const nn_shard *s, int p);

/* The most chunks any owned partition has (the size of nn_shard_order's scratch). */
size_t nn_shard_max_chunks(const nn_shard *s);

/* Fill order[0 .. row_end-row_begin) for one epoch: for each owned partition, the local indices
 * (relative to row_begin) of its training rows, in the order the epoch visits them. scratch
 * holds nn_shard_max_chunks(s) entries. */
void nn_shard_order(size_t *order, size_t *scratch, const nn_shard *s, uint64_t seed, long epoch,
                    int shuffle);

/* Local row indices used by step k: for owned partition j (0-based among the rank's own),
 * rows order[part_offset_j + k*B/P + i] for i < B/P. Written to rows[0 .. local_batch). */
void nn_shard_batch_rows(size_t *rows, const nn_shard *s, const size_t *order, size_t k);

/* Contiguous split of n rows over world ranks for evaluation: [*begin, *end). */
void nn_split_rows(size_t n, int rank, int world, size_t *begin, size_t *end);

#endif
