/* Parameter updates, gradient clipping and learning-rate schedules: flat loops over the one
 * parameter buffer. Pure: no MPI, no I/O, no malloc; every array is n floats in the layout of
 * the parameter buffer, and nothing here is collective. */
#ifndef NNMPI_OPTIM_H
#define NNMPI_OPTIM_H

#include <stddef.h>

/* ---- update rules ------------------------------------------------------------------------ */

typedef enum nn_optimizer { NN_OPT_SGD, NN_OPT_NESTEROV, NN_OPT_ADAM, NN_OPT_ADAMW } nn_optimizer;

/* Hyper-parameters of one step. Weight decay is applied to every parameter, biases included
 * (the kernels see one flat buffer and do not know which entries are biases). */
typedef struct nn_optim_params {
  nn_optimizer kind;
  float lr;                /* learning rate of this step (after schedule) */
  float momentum;          /* SGD / Nesterov */
  float beta1, beta2, eps; /* Adam / AdamW */
  float weight_decay;      /* SGD/Nesterov/Adam: L2 added to the mean gradient (s*g + wd*theta);
                              AdamW: decoupled (theta -= lr*wd*theta) */
} nn_optim_params;

/* Number of state buffers (each n floats, zeroed before step 1) that nn_optim_step needs:
 * SGD with momentum 0 -> 0; SGD with momentum, Nesterov -> 1 (velocity v in state0);
 * Adam, AdamW -> 2 (first moment m in state0, second moment v in state1). */
int nn_optim_state_count(const nn_optim_params *p);

/* One update of theta (n) from g (n), the SUMMED gradient of a global batch;
 * scale s = 1/batch turns it into the mean. With the effective mean gradient
 *   d = s*g + wd*theta   (SGD, Nesterov, Adam: L2 on the mean gradient, i.e. g' = g + wd*theta/s)
 *   d = s*g              (AdamW)
 * the rules, elementwise, are
 *   SGD, mu = 0:   theta -= lr*d                                (state untouched, may be NULL)
 *   SGD:           v = mu*v + d;  theta -= lr*v                 (heavy ball)
 *   Nesterov:      v = mu*v + d;  theta -= lr*(d + mu*v)        (PyTorch convention)
 *   Adam:          m = b1*m + (1-b1)*d;  v = b2*v + (1-b2)*d^2;
 *                  mhat = m/(1-b1^t);  vhat = v/(1-b2^t);  theta -= lr*mhat/(sqrt(vhat) + eps)
 *   AdamW:         theta -= lr*wd*theta first (decoupled, Loshchilov & Hutter / PyTorch AdamW),
 *                  then the Adam rule with d = s*g.
 * state0/state1 (n each) as nn_optim_state_count says (NULL when unused). t is the 1-based
 * step count (t >= 1; only Adam/AdamW use it, for bias correction).
 * Returns 1 when every g[i] and every updated theta[i] is finite, else 0 (the NaN/Inf check,
 * in the same pass as the update; theta is updated all the same, and the caller stops). */
int nn_optim_step(float *theta, float *state0, float *state1, const float *g, size_t n,
                  const nn_optim_params *p, long t, float scale);

/* SGD with optional heavy-ball momentum, kept for src/train.c: nn_optim_step with kind SGD and
 * no weight decay. With momentum == 0 (or v == NULL) v is untouched and theta -= lr*scale*g. */
int nn_sgd_step(float *theta, float *v, const float *g, size_t n, float lr, float momentum,
                float scale);

/* ---- clipping by global norm ------------------------------------------------------------- */

/* Sum of squares of g (n), accumulated in double (no float overflow or loss of small
 * terms). On the reduced gradient it is global; the L2 norm of the mean gradient is
 * sqrt(sumsq)*scale. */
double nn_sumsq(const float *g, size_t n);

/* Factor that brings the mean-gradient norm sqrt(sumsq)*scale down to max_norm:
 * max_norm / norm when norm > max_norm, else 1. Returns 1 when max_norm <= 0 (clipping off) and
 * when the norm is NaN or Inf, so that nn_optim_step's check still sees the bad gradient rather
 * than a zeroed one. The caller multiplies the update's scale by it. */
float nn_clip_factor(double sumsq, float scale, float max_norm);

/* ---- learning-rate schedules ------------------------------------------------------------- */

typedef enum nn_schedule_kind {
  NN_SCHED_CONSTANT,
  NN_SCHED_STEP,
  NN_SCHED_COSINE
} nn_schedule_kind;

typedef struct nn_schedule {
  nn_schedule_kind kind;
  double base_lr;      /* after the optional linear scaling rule, which the caller applies */
  double warmup_steps; /* linear warmup over the first warmup_steps steps; <= 0: none */
  double total_steps;  /* cosine: decays to min_lr at total_steps (counted from step 0) */
  double step_every;   /* step schedule: multiply by gamma every step_every steps after warmup;
                          <= 0: never */
  double gamma;
  double min_lr;       /* cosine floor */
} nn_schedule;

/* Learning rate at the 0-based global step `step` (step >= 0), with W = warmup_steps:
 *   step < W:   base_lr * (step+1)/W                      (reaches base_lr at step W-1)
 *   then, with k = step - W (k = step when W <= 0),
 *   constant:   base_lr
 *   step:       base_lr * gamma^floor(k/step_every)
 *   cosine:     min_lr + (base_lr - min_lr) * 0.5 * (1 + cos(pi * k/(total_steps - W))),
 *               and min_lr from step total_steps on (also when total_steps <= W). */
double nn_schedule_lr(const nn_schedule *s, long step);

#endif
