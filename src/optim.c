/* SGD (with momentum) as one flat loop over the parameter buffer. */
#include "nnmpi/optim.h"

#include <math.h>

void nn_sgd_step(float *theta, float *v, const float *g, size_t n, float lr, float momentum,
                 float scale) {
  if (v && momentum != 0.0f) {
    for (size_t i = 0; i < n; i++) {
      v[i] = momentum * v[i] + scale * g[i];
      theta[i] -= lr * v[i];
    }
  } else {
    float step = lr * scale;
    for (size_t i = 0; i < n; i++) theta[i] -= step * g[i];
  }
}

int nn_all_finite(const float *x, size_t n) {
  /* Summing x*0 keeps the loop branch-free: it is 0 unless some x is Inf or NaN. */
  float acc = 0.0f;
  for (size_t i = 0; i < n; i++) acc += x[i] * 0.0f;
  return acc == 0.0f;
}
