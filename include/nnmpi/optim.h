/* Parameter updates: flat loops over the parameter buffer. Pure: no MPI, no I/O. */
#ifndef NNMPI_OPTIM_H
#define NNMPI_OPTIM_H

#include <stddef.h>

/* SGD with optional (heavy-ball) momentum, on the summed gradient g of a global batch:
 *   v     <- momentum * v + scale * g       (scale = 1 / global batch size)
 *   theta <- theta - lr * v
 * With momentum == 0, v may be NULL and theta <- theta - lr * scale * g. */
void nn_sgd_step(float *theta, float *v, const float *g, size_t n, float lr, float momentum,
                 float scale);

/* 1 when every x[i] is finite, else 0. */
int nn_all_finite(const float *x, size_t n);

#endif
