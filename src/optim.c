/* SGD, Nesterov, Adam and AdamW as flat loops over the parameter buffer; clipping by global
 * norm; learning-rate schedules. Formulas are in include/nnmpi/optim.h. */
#include "nnmpi/optim.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

/* M_PI is not in C11 and _POSIX_C_SOURCE alone does not expose it. */
static const double pi = 3.14159265358979323846;

int nn_optim_state_count(const nn_optim_params *p) {
  switch (p->kind) {
  case NN_OPT_SGD: return p->momentum != 0.0f ? 1 : 0;
  case NN_OPT_NESTEROV: return 1;
  case NN_OPT_ADAM:
  case NN_OPT_ADAMW: return 2;
  }
  return 0;
}

/* 1 for Inf and NaN: the floats whose exponent bits are all ones. An integer test keeps the
 * loops below branch-free and vectorized (a float comparison chain would not be). */
static inline uint32_t nonfinite(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  return (u & 0x7f800000u) == 0x7f800000u;
}

/* SGD (heavy ball or Nesterov) with the L2 term folded into the mean gradient d. Each loop ORs
 * in whether g[i] or the new theta[i] is not finite, in the same pass (returned as nonzero). */
static uint32_t momentum_step(float *theta, float *v, const float *g, size_t n, float lr, float mu,
                              float wd, int nesterov, float scale) {
  uint32_t bad = 0;
  if (!nesterov && mu == 0.0f) {
    for (size_t i = 0; i < n; i++) {
      theta[i] -= lr * (scale * g[i] + wd * theta[i]);
      bad |= nonfinite(g[i]) | nonfinite(theta[i]);
    }
    return bad;
  }
  for (size_t i = 0; i < n; i++) {
    float d = scale * g[i] + wd * theta[i];
    v[i] = mu * v[i] + d;
    theta[i] -= lr * (nesterov ? d + mu * v[i] : v[i]);
    bad |= nonfinite(g[i]) | nonfinite(theta[i]);
  }
  return bad;
}

/* Adam with L2 weight decay l2 in the gradient; AdamW passes l2 = 0 after its decoupled decay. */
static uint32_t adam_step(float *theta, float *m, float *v, const float *g, size_t n,
                          const nn_optim_params *p, float l2, long t, float scale) {
  float b1 = p->beta1, b2 = p->beta2, lr = p->lr, eps = p->eps;
  /* Bias corrections once per step, in double: b2^t stays accurate for large t. */
  float inv_bc1 = (float)(1.0 / (1.0 - pow((double)b1, (double)t)));
  float inv_bc2 = (float)(1.0 / (1.0 - pow((double)b2, (double)t)));
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) {
    float d = scale * g[i] + l2 * theta[i];
    m[i] = b1 * m[i] + (1.0f - b1) * d;
    v[i] = b2 * v[i] + (1.0f - b2) * d * d;
    float mhat = m[i] * inv_bc1, vhat = v[i] * inv_bc2;
    theta[i] -= lr * mhat / (sqrtf(vhat) + eps);
    bad |= nonfinite(g[i]) | nonfinite(theta[i]);
  }
  return bad;
}

int nn_optim_step(float *theta, float *state0, float *state1, const float *g, size_t n,
                  const nn_optim_params *p, long t, float scale) {
  uint32_t bad = 0;
  switch (p->kind) {
  case NN_OPT_SGD:
    bad = momentum_step(theta, state0, g, n, p->lr, p->momentum, p->weight_decay, 0, scale);
    break;
  case NN_OPT_NESTEROV:
    bad = momentum_step(theta, state0, g, n, p->lr, p->momentum, p->weight_decay, 1, scale);
    break;
  case NN_OPT_ADAM: bad = adam_step(theta, state0, state1, g, n, p, p->weight_decay, t, scale); break;
  case NN_OPT_ADAMW: {
    float keep = 1.0f - p->lr * p->weight_decay;
    for (size_t i = 0; i < n; i++) theta[i] *= keep;
    bad = adam_step(theta, state0, state1, g, n, p, 0.0f, t, scale);
    break;
  }
  }
  return !bad;
}

int nn_sgd_step(float *theta, float *v, const float *g, size_t n, float lr, float momentum,
                float scale) {
  nn_optim_params p = {.kind = NN_OPT_SGD, .lr = lr, .momentum = v ? momentum : 0.0f};
  return nn_optim_step(theta, v, NULL, g, n, &p, 1, scale);
}

double nn_sumsq(const float *g, size_t n) {
  double acc = 0.0;
  for (size_t i = 0; i < n; i++) acc += (double)g[i] * (double)g[i];
  return acc;
}

float nn_clip_factor(double sumsq, float scale, float max_norm) {
  double norm = sqrt(sumsq) * (double)scale;
  /* Written so that a NaN norm also lands on "no clipping". */
  if (max_norm <= 0.0f || !(norm > (double)max_norm) || isinf(norm)) return 1.0f;
  return (float)((double)max_norm / norm);
}

double nn_schedule_lr(const nn_schedule *s, long step) {
  double W = s->warmup_steps, x = (double)step;
  if (x < W) return s->base_lr * (x + 1.0) / W;
  double k = W > 0.0 ? x - W : x;
  switch (s->kind) {
  case NN_SCHED_CONSTANT: return s->base_lr;
  case NN_SCHED_STEP:
    if (s->step_every <= 0.0) return s->base_lr;
    return s->base_lr * pow(s->gamma, floor(k / s->step_every));
  case NN_SCHED_COSINE: {
    double span = s->total_steps - (W > 0.0 ? W : 0.0);
    if (span <= 0.0 || k >= span) return s->min_lr;
    return s->min_lr + (s->base_lr - s->min_lr) * 0.5 * (1.0 + cos(pi * k / span));
  }
  }
  return s->base_lr;
}
