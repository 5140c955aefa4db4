/* Counter-keyed random numbers (splitmix64). A stream is named by a key such as
 * (seed, epoch, partition), so every rank can draw the same numbers without communication,
 * whatever the number of ranks. */
#ifndef NNMPI_RNG_H
#define NNMPI_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct nn_rng {
  uint64_t state;
} nn_rng;

/* Mix up to three 64-bit words into one seed; distinct keys give unrelated streams. */
uint64_t nn_rng_key(uint64_t a, uint64_t b, uint64_t c);
void nn_rng_init(nn_rng *r, uint64_t key);
uint64_t nn_rng_u64(nn_rng *r);
/* Advance the stream as k calls of nn_rng_u64 (or nn_rng_uniform) would, in O(1). */
void nn_rng_skip(nn_rng *r, uint64_t k);
/* Uniform integer in [0, n), unbiased; n > 0. */
uint64_t nn_rng_below(nn_rng *r, uint64_t n);
/* Uniform double in [0, 1). */
double nn_rng_uniform(nn_rng *r);
/* Standard normal (Box-Muller). */
double nn_rng_normal(nn_rng *r);
/* 64-bit FNV-1a hash of n bytes (config and model-shape hashes kept in checkpoints). */
uint64_t nn_hash_bytes(const void *p, size_t n);

/* 64-bit hash of the bits of n floats, for comparing large buffers (the replica check): four
 * interleaved FNV-1a lanes over 32-bit words, folded with n at the end. Any single differing
 * bit changes it; about 10x faster than nn_hash_bytes on the same buffer. */
uint64_t nn_hash_floats(const float *x, size_t n);
/* In-place Fisher-Yates shuffle of idx[0..n). */
void nn_rng_shuffle(nn_rng *r, size_t *idx, size_t n);

#endif
