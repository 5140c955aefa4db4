/* splitmix64 streams: small, fast, and reproducible on every platform. */
#include "nnmpi/rng.h"

#include <math.h>
#include <string.h>

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t nn_rng_key(uint64_t a, uint64_t b, uint64_t c) {
  uint64_t h = mix64(a + 0x9e3779b97f4a7c15ULL);
  h = mix64(h ^ (b + 0x632be59bd9b4e019ULL));
  return mix64(h ^ (c + 0x85157af5b5f7e9e3ULL));
}

void nn_rng_init(nn_rng *r, uint64_t key) { r->state = key; }

uint64_t nn_rng_u64(nn_rng *r) {
  r->state += 0x9e3779b97f4a7c15ULL;
  return mix64(r->state);
}

void nn_rng_skip(nn_rng *r, uint64_t k) { r->state += k * 0x9e3779b97f4a7c15ULL; }

uint64_t nn_rng_below(nn_rng *r, uint64_t n) {
  uint64_t limit = UINT64_MAX - UINT64_MAX % n; /* reject the biased tail */
  uint64_t x;
  do {
    x = nn_rng_u64(r);
  } while (x >= limit);
  return x % n;
}

double nn_rng_uniform(nn_rng *r) { return (double)(nn_rng_u64(r) >> 11) * 0x1.0p-53; }

double nn_rng_normal(nn_rng *r) {
  double u1 = nn_rng_uniform(r), u2 = nn_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void nn_rng_shuffle(nn_rng *r, size_t *idx, size_t n) {
  for (size_t i = n; i > 1; i--) {
    size_t j = (size_t)nn_rng_below(r, i);
    size_t t = idx[i - 1];
    idx[i - 1] = idx[j];
    idx[j] = t;
  }
}

uint64_t nn_hash_bytes(const void *p, size_t n) {
  const unsigned char *b = p;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

uint64_t nn_hash_floats(const float *x, size_t n) {
  const uint64_t basis = 0xcbf29ce484222325ULL, prime = 0x100000001b3ULL;
  /* Four lanes: each multiply waits on the one before it in its lane only. The multiply by an
   * odd prime is a bijection mod 2^64, so a difference in a lane survives to the end. */
  uint64_t h[4] = {basis, basis ^ 1, basis ^ 2, basis ^ 3};
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; k++) {
      uint32_t u;
      memcpy(&u, &x[i + k], sizeof u);
      h[k] = (h[k] ^ u) * prime;
    }
  for (; i < n; i++) {
    uint32_t u;
    memcpy(&u, &x[i], sizeof u);
    h[i & 3] = (h[i & 3] ^ u) * prime;
  }
  uint64_t r = (basis ^ (uint64_t)n) * prime;
  for (int k = 0; k < 4; k++) r = (r ^ h[k]) * prime;
  return r;
}
