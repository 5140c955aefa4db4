/* Optimizer kernels against two-step examples worked by hand (SGD, momentum, Nesterov, Adam,
 * AdamW, each with and without weight decay); Adam's first step; clipping against a naive norm;
 * schedules at their boundaries; the finite check. */
#include "nnmpi/optim.h"
#include "test.h"

/* Every two-step example below starts from theta = [1, -2] with a batch of 2 (scale 1/2). */
static const float theta0[2] = {1.0f, -2.0f};
static const float g1[2] = {0.4f, -0.2f};  /* summed gradient of step 1; mean [0.2, -0.1] */
static const float g2a[2] = {-0.2f, 0.6f}; /* a different step-2 gradient; mean [-0.1, 0.3] */

/* Two steps of nn_optim_step from theta0 with zeroed state; gradient g1, then g_second. */
static void two_steps(float theta[2], float s0[2], float s1[2], const nn_optim_params *p,
                      const float *g_second) {
  theta[0] = theta0[0], theta[1] = theta0[1];
  s0[0] = s0[1] = s1[0] = s1[1] = 0.0f;
  int k = nn_optim_state_count(p);
  nn_optim_step(theta, k >= 1 ? s0 : NULL, k >= 2 ? s1 : NULL, g1, 2, p, 1, 0.5f);
  nn_optim_step(theta, k >= 1 ? s0 : NULL, k >= 2 ? s1 : NULL, g_second, 2, p, 2, 0.5f);
}

static void test_legacy_sgd(void) {
  /* theta = [1, -2], g (summed over a batch of 2) = [0.4, -0.2], lr = 0.5, scale = 1/2:
   * plain SGD: theta <- theta - 0.5 * 0.5 * g = [0.9, -1.95], then [0.8, -1.9]. */
  float theta[2] = {1.0f, -2.0f}, g[2] = {0.4f, -0.2f};
  nn_sgd_step(theta, NULL, g, 2, 0.5f, 0.0f, 0.5f);
  CHECK_NEAR(theta[0], 0.9, 1e-7);
  CHECK_NEAR(theta[1], -1.95, 1e-7);
  nn_sgd_step(theta, NULL, g, 2, 0.5f, 0.0f, 0.5f);
  CHECK_NEAR(theta[0], 0.8, 1e-7);
  CHECK_NEAR(theta[1], -1.9, 1e-7);

  /* momentum 0.9: v1 = g/2 = [0.2, -0.1], theta1 = [0.9, -1.95];
   * v2 = 0.9 v1 + g/2 = [0.38, -0.19], theta2 = theta1 - 0.5 v2 = [0.71, -1.855]. */
  float t2[2] = {1.0f, -2.0f}, v[2] = {0.0f, 0.0f};
  nn_sgd_step(t2, v, g, 2, 0.5f, 0.9f, 0.5f);
  CHECK_NEAR(v[0], 0.2, 1e-7);
  CHECK_NEAR(t2[1], -1.95, 1e-7);
  nn_sgd_step(t2, v, g, 2, 0.5f, 0.9f, 0.5f);
  CHECK_NEAR(v[0], 0.38, 1e-7);
  CHECK_NEAR(v[1], -0.19, 1e-7);
  CHECK_NEAR(t2[0], 0.71, 1e-6);
  CHECK_NEAR(t2[1], -1.855, 1e-6);
}

static void test_state_count(void) {
  nn_optim_params p = {.kind = NN_OPT_SGD};
  CHECK_INT(nn_optim_state_count(&p), 0);
  p.momentum = 0.9f;
  CHECK_INT(nn_optim_state_count(&p), 1);
  p.kind = NN_OPT_NESTEROV;
  CHECK_INT(nn_optim_state_count(&p), 1);
  p.kind = NN_OPT_ADAM;
  CHECK_INT(nn_optim_state_count(&p), 2);
  p.kind = NN_OPT_ADAMW;
  CHECK_INT(nn_optim_state_count(&p), 2);
}

static void test_sgd(void) {
  float th[2], s0[2], s1[2];
  nn_optim_params p = {.kind = NN_OPT_SGD, .lr = 0.5f, .momentum = 0.0f, .weight_decay = 0.1f};

  /* mu = 0, wd = 0.1, lr = 0.5, g1 both steps. d = s*g + wd*theta.
   * step 1: d = [0.2 + 0.1, -0.1 - 0.2] = [0.3, -0.3];
   *         theta = [1 - 0.15, -2 + 0.15] = [0.85, -1.85]
   * step 2: d = [0.2 + 0.085, -0.1 - 0.185] = [0.285, -0.285];
   *         theta = [0.85 - 0.1425, -1.85 + 0.1425] = [0.7075, -1.7075] */
  two_steps(th, s0, s1, &p, g1);
  CHECK_NEAR(th[0], 0.7075, 1e-6);
  CHECK_NEAR(th[1], -1.7075, 1e-6);

  /* mu = 0.9, wd = 0: same numbers as the nn_sgd_step example above, v2 = [0.38, -0.19],
   * theta2 = [0.71, -1.855]. */
  p.momentum = 0.9f, p.weight_decay = 0.0f;
  two_steps(th, s0, s1, &p, g1);
  CHECK_NEAR(s0[0], 0.38, 1e-7);
  CHECK_NEAR(s0[1], -0.19, 1e-7);
  CHECK_NEAR(th[0], 0.71, 1e-6);
  CHECK_NEAR(th[1], -1.855, 1e-6);

  /* mu = 0.9, wd = 0.1:
   * step 1: d = [0.3, -0.3]; v = [0.3, -0.3]; theta = [1 - 0.15, -2 + 0.15] = [0.85, -1.85]
   * step 2: d = [0.285, -0.285]; v = 0.9*[0.3, -0.3] + d = [0.555, -0.555];
   *         theta = [0.85 - 0.2775, -1.85 + 0.2775] = [0.5725, -1.5725] */
  p.weight_decay = 0.1f;
  two_steps(th, s0, s1, &p, g1);
  CHECK_NEAR(s0[0], 0.555, 1e-6);
  CHECK_NEAR(s0[1], -0.555, 1e-6);
  CHECK_NEAR(th[0], 0.5725, 1e-6);
  CHECK_NEAR(th[1], -1.5725, 1e-6);
}

static void test_nesterov(void) {
  float th[2], s0[2], s1[2];
  nn_optim_params p = {.kind = NN_OPT_NESTEROV, .lr = 0.5f, .momentum = 0.9f};

  /* wd = 0, g1 both steps, d = [0.2, -0.1]:
   * step 1: v = [0.2, -0.1]; d + 0.9 v = [0.38, -0.19]; theta -= 0.5*that -> [0.81, -1.905]
   * step 2: v = 0.9*[0.2, -0.1] + d = [0.38, -0.19]; d + 0.9 v = [0.2 + 0.342, -0.1 - 0.171]
   *         = [0.542, -0.271]; theta = [0.81 - 0.271, -1.905 + 0.1355] = [0.539, -1.7695] */
  two_steps(th, s0, s1, &p, g1);
  CHECK_NEAR(s0[0], 0.38, 1e-7);
  CHECK_NEAR(s0[1], -0.19, 1e-7);
  CHECK_NEAR(th[0], 0.539, 1e-6);
  CHECK_NEAR(th[1], -1.7695, 1e-6);

  /* wd = 0.1:
   * step 1: d = [0.3, -0.3]; v = [0.3, -0.3]; d + 0.9 v = [0.57, -0.57];
   *         theta = [1 - 0.285, -2 + 0.285] = [0.715, -1.715]
   * step 2: d = [0.2 + 0.0715, -0.1 - 0.1715] = [0.2715, -0.2715];
   *         v = [0.27 + 0.2715, ...] = [0.5415, -0.5415];
   *         d + 0.9 v = 0.2715 + 0.48735 = 0.75885, times lr 0.5 = 0.379425;
   *         theta = [0.715 - 0.379425, -1.715 + 0.379425] = [0.335575, -1.335575] */
  p.weight_decay = 0.1f;
  two_steps(th, s0, s1, &p, g1);
  CHECK_NEAR(s0[0], 0.5415, 1e-6);
  CHECK_NEAR(th[0], 0.335575, 1e-6);
  CHECK_NEAR(th[1], -1.335575, 1e-6);
}

/* Adam examples: lr = 0.1, b1 = 0.9, b2 = 0.999, eps = 1e-8; gradient g1 then g2a. Worked by
 * hand; the square roots and quotients were rechecked with bc, not with these kernels.
 * Bias corrections: 1 - b1 = 0.1, 1 - b2 = 0.001, 1 - b1^2 = 0.19, 1 - b2^2 = 0.001999. */
static void test_adam(void) {
  float th[2], s0[2], s1[2];
  nn_optim_params p = {.kind = NN_OPT_ADAM, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f,
                       .eps = 1e-8f};

  /* wd = 0.
   * step 1: d = [0.2, -0.1]; m = 0.1 d = [0.02, -0.01]; v = 0.001 d^2 = [4e-5, 1e-5];
   *         mhat = [0.2, -0.1], sqrt(vhat) = [0.2, 0.1]: a step of lr*sign(d);
   *         theta = [0.9, -1.9] (eps changes it by ~1e-8).
   * step 2: d = [-0.1, 0.3];
   *         m = 0.9*[0.02, -0.01] + 0.1*[-0.1, 0.3] = [0.008, 0.021];
   *         mhat = m/0.19 = [0.0421052632, 0.1105263158]
   *         v = 0.999*[4e-5, 1e-5] + 0.001*[0.01, 0.09] = [4.996e-5, 9.999e-5];
   *         vhat = v/0.001999 = [0.0249924962, 0.0500200100]
   *         sqrt(vhat) = [0.1580901521, 0.2236515417]  (sqrt(0.025) = 0.1581138830 and
   *         sqrt(0.05) = 0.2236067977, plus the first-order term delta/(2 sqrt))
   *         step = 0.1*mhat/sqrt(vhat) = [0.0266337040, 0.0494189822]
   *         theta = [0.9 - 0.0266337040, -1.9 - 0.0494189822] = [0.8733662960, -1.9494189822]
   * The m and v of step 2 also pin down the moment updates (a swapped b1/b2 would not match).
   * v is checked to 3e-9: 1 - 0.999f is 0.000999987 in float, 1.3e-5 off relative. */
  two_steps(th, s0, s1, &p, g2a);
  CHECK_NEAR(s0[0], 0.008, 1e-8);
  CHECK_NEAR(s0[1], 0.021, 1e-8);
  CHECK_NEAR(s1[0], 4.996e-5, 3e-9);
  CHECK_NEAR(s1[1], 9.999e-5, 3e-9);
  CHECK_NEAR(th[0], 0.8733662960, 2e-6);
  CHECK_NEAR(th[1], -1.9494189822, 2e-6);

  /* wd = 0.1 as L2 on the mean gradient, d = s*g + 0.1*theta.
   * step 1: d = [0.2 + 0.1, -0.1 - 0.2] = [0.3, -0.3]; again a step of lr*sign(d):
   *         theta = [0.9, -1.9]; m = [0.03, -0.03]; v = 0.001*0.09 = [9e-5, 9e-5]
   * step 2: d = [-0.1 + 0.09, 0.3 - 0.19] = [-0.01, 0.11];
   *         m = 0.9*[0.03, -0.03] + 0.1*[-0.01, 0.11] = [0.026, -0.016];
   *         mhat = m/0.19 = [0.1368421053, -0.0842105263]
   *         v = 0.999*9e-5 + 0.001*[1e-4, 0.0121] = [9.001e-5, 1.0201e-4];
   *         vhat = v/0.001999 = [0.0450275138, 0.0510305153]
   *         sqrt(vhat) = [0.2121968851, 0.2258993578]  (from sqrt(0.045) = 0.2121320344,
   *         sqrt(0.051) = 0.2258317958 plus the first-order term)
   *         step = 0.1*mhat/sqrt(vhat) = [0.0644882720, -0.0372778954]
   *         theta = [0.9 - 0.0644882720, -1.9 + 0.0372778954] = [0.8355117280, -1.8627221046] */
  p.weight_decay = 0.1f;
  two_steps(th, s0, s1, &p, g2a);
  CHECK_NEAR(s0[0], 0.026, 1e-8);
  CHECK_NEAR(s1[1], 1.0201e-4, 3e-9);
  CHECK_NEAR(th[0], 0.8355117280, 2e-6);
  CHECK_NEAR(th[1], -1.8627221046, 2e-6);
}

static void test_adamw(void) {
  float th[2], s0[2], s1[2];
  nn_optim_params p = {.kind = NN_OPT_ADAMW, .lr = 0.1f, .beta1 = 0.9f, .beta2 = 0.999f,
                       .eps = 1e-8f, .weight_decay = 0.0f};

  /* wd = 0: exactly Adam without weight decay (same numbers as above). */
  two_steps(th, s0, s1, &p, g2a);
  CHECK_NEAR(th[0], 0.8733662960, 2e-6);
  CHECK_NEAR(th[1], -1.9494189822, 2e-6);

  /* wd = 0.1, decoupled: theta *= 1 - lr*wd = 0.99 before each Adam step; d = s*g (no L2), so
   * m, v and the Adam steps are those of plain Adam above.
   * step 1: theta = [0.99, -1.98], then - lr*sign(d) -> [0.89, -1.88]
   * step 2: theta = [0.8811, -1.8612], then - [0.0266337040, 0.0494189822]
   *         -> [0.8544662960, -1.9106189822]
   * (Decaying after the Adam step instead would give [0.8557226331, -1.9111147935], off by
   * 1e-3; L2-style decay would give the Adam-with-wd numbers.) */
  p.weight_decay = 0.1f;
  two_steps(th, s0, s1, &p, g2a);
  CHECK_NEAR(s0[0], 0.008, 1e-8);
  CHECK_NEAR(s1[1], 9.999e-5, 3e-9);
  CHECK_NEAR(th[0], 0.8544662960, 2e-6);
  CHECK_NEAR(th[1], -1.9106189822, 2e-6);
}

/* At t = 1 the bias-corrected step is lr * d/(|d| + eps): lr*sign(d) whatever the gradient's
 * size, and exactly 0 for a zero gradient (eps keeps 0/0 away). */
static void test_adam_first_step(void) {
  float g[4] = {1000.0f, -1e-3f, 3.0f, 0.0f};
  float th[4] = {0.5f, 0.5f, -0.5f, 2.0f}, m[4] = {0}, v[4] = {0};
  nn_optim_params p = {.kind = NN_OPT_ADAM, .lr = 0.01f, .beta1 = 0.9f, .beta2 = 0.999f,
                       .eps = 1e-8f};
  nn_optim_step(th, m, v, g, 4, &p, 1, 0.25f);
  /* |d| = 2.5e-4 for g[1]: |d|/(|d| + eps) = 1 - 4e-5, so a relative tolerance of 1e-4. */
  CHECK_NEAR(th[0], 0.5 - 0.01, 0.01 * 1e-4);
  CHECK_NEAR(th[1], 0.5 + 0.01, 0.01 * 1e-4);
  CHECK_NEAR(th[2], -0.5 - 0.01, 0.01 * 1e-4);
  CHECK_NEAR(th[3], 2.0, 0.0);
}

/* Naive reference: the L2 norm of scale*g with a plain double loop. */
static double naive_norm(const float *g, size_t n, float scale) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += ((double)scale * g[i]) * ((double)scale * g[i]);
  return sqrt(s);
}

static void test_clip(void) {
  /* g = [3, -4] summed over a batch of 2: mean-gradient norm 0.5*5 = 2.5. */
  float g[2] = {3.0f, -4.0f};
  CHECK_NEAR(nn_sumsq(g, 2), 25.0, 0.0);
  CHECK_NEAR(nn_clip_factor(25.0, 0.5f, 1.0f), 0.4, 1e-7);  /* 1/2.5 */
  CHECK_NEAR(nn_clip_factor(25.0, 0.5f, 2.5f), 1.0, 0.0);   /* at the bound: untouched */
  CHECK_NEAR(nn_clip_factor(25.0, 0.5f, 10.0f), 1.0, 0.0);  /* below the bound */
  CHECK_NEAR(nn_clip_factor(25.0, 0.5f, 0.0f), 1.0, 0.0);   /* clipping off */
  CHECK_NEAR(nn_clip_factor(25.0, 0.5f, -1.0f), 1.0, 0.0);
  CHECK_NEAR(nn_clip_factor(NAN, 0.5f, 1.0f), 1.0, 0.0);    /* left for nn_optim_step's check */
  CHECK_NEAR(nn_clip_factor(INFINITY, 0.5f, 1.0f), 1.0, 0.0);
  /* Squares in double: 1e20^2 overflows float but not double. */
  float big[2] = {1e20f, -1e20f};
  CHECK_NEAR(nn_sumsq(big, 2) / 2e40, 1.0, 1e-6);

  /* An uneven vector against the naive norm, before and after clipping to 0.75. */
  float h[7] = {0.3f, -1.7f, 2.25f, 0.0f, -0.05f, 8.0f, -3.5f};
  float scale = 1.0f / 3.0f, max_norm = 0.75f;
  double before = naive_norm(h, 7, scale);
  CHECK_NEAR(sqrt(nn_sumsq(h, 7)) * scale, before, 1e-9 * before);
  float f = nn_clip_factor(nn_sumsq(h, 7), scale, max_norm);
  CHECK_NEAR(f, max_norm / before, 1e-7);
  /* the trainer folds the factor into the update's scale: one SGD step with lr 1 from theta = 0
   * moves theta by -scale*f*h, whose norm must be max_norm */
  float theta[7] = {0};
  CHECK_INT(nn_sgd_step(theta, NULL, h, 7, 1.0f, 0.0f, scale * f), 1);
  CHECK_NEAR(naive_norm(theta, 7, 1.0f), max_norm, 1e-6);
  CHECK_NEAR(theta[5], -8.0 * scale * max_norm / before, 1e-6);
}

static void test_schedules(void) {
  /* constant, warmup 4, base 0.1: 0.1*(step+1)/4 for step 0..3, then 0.1. */
  nn_schedule s = {.kind = NN_SCHED_CONSTANT, .base_lr = 0.1, .warmup_steps = 4};
  CHECK_NEAR(nn_schedule_lr(&s, 0), 0.025, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 1), 0.05, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 3), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 4), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 1000), 0.1, 1e-12);
  s.warmup_steps = 0; /* no warmup: base from step 0 */
  CHECK_NEAR(nn_schedule_lr(&s, 0), 0.1, 1e-12);

  /* step: base 0.1, warmup 2, gamma 0.5 every 3 steps; k = step - 2.
   * step 0 -> 0.05 (warmup), 1 -> 0.1 (end of warmup), 2..4 -> 0.1 (k = 0..2),
   * 5..7 -> 0.05 (k = 3..5), 8 -> 0.025 (k = 6). */
  s = (nn_schedule){.kind = NN_SCHED_STEP, .base_lr = 0.1, .warmup_steps = 2, .step_every = 3,
                    .gamma = 0.5};
  CHECK_NEAR(nn_schedule_lr(&s, 0), 0.05, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 1), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 2), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 4), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 5), 0.05, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 7), 0.05, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 8), 0.025, 1e-12);

  /* cosine: base 0.1, min 0.01, warmup 10, total 110, so the decay spans 100 steps.
   * step 0 -> 0.01 (0.1*1/10); 9 -> 0.1; 10 -> 0.1 (cos 0 = 1);
   * 35 -> 0.01 + 0.09*0.5*(1 + cos(pi/4)) = 0.01 + 0.045*1.7071067812 = 0.0868198052;
   * 60 -> midpoint (0.1 + 0.01)/2 = 0.055; 110 -> 0.01;
   * 210 -> 0.01 (unclamped, cos(2 pi) would bring it back to 0.1). */
  s = (nn_schedule){.kind = NN_SCHED_COSINE, .base_lr = 0.1, .warmup_steps = 10,
                    .total_steps = 110, .min_lr = 0.01};
  CHECK_NEAR(nn_schedule_lr(&s, 0), 0.01, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 9), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 10), 0.1, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 35), 0.0868198052, 1e-10);
  CHECK_NEAR(nn_schedule_lr(&s, 60), 0.055, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 110), 0.01, 1e-12);
  CHECK_NEAR(nn_schedule_lr(&s, 210), 0.01, 1e-12);
}

/* The NaN/Inf check that nn_optim_step makes in its update pass, against a naive isfinite
 * loop over g and the updated theta, for every optimizer. Lengths 1..19 put the bad value in
 * the vectorized body and in the tail of the loop. */
static int naive_all_finite(const float *x, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isfinite(x[i])) return 0;
  return 1;
}

static void test_update_finite(void) {
  const nn_optimizer kinds[] = {NN_OPT_SGD, NN_OPT_SGD, NN_OPT_NESTEROV, NN_OPT_ADAM, NN_OPT_ADAMW};
  const float bad[] = {NAN, INFINITY, -INFINITY};
  int cases = 0;
  for (int k = 0; k < 5; k++) {
    nn_optim_params p = {.kind = kinds[k], .lr = 0.1f, .momentum = k == 0 ? 0.0f : 0.9f,
                         .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f};
    for (size_t n = 1; n <= 19; n += 3) {
      for (size_t at = 0; at <= n; at++) { /* at == n: no bad value */
        for (int b = 0; b < (at < n ? 3 : 1); b++) {
          float g[19], theta[19], s0[19] = {0}, s1[19] = {0};
          for (size_t i = 0; i < n; i++) {
            g[i] = 0.25f * (float)i - 1.0f;
            theta[i] = 0.5f - 0.1f * (float)i;
          }
          if (at < n) g[at] = bad[b];
          int want = naive_all_finite(g, n);
          int got = nn_optim_step(theta, s0, s1, g, n, &p, 1, 0.5f);
          want = want && naive_all_finite(theta, n);
          CHECK_INT(got, want);
          CHECK_INT(got, at == n);
          cases++;
        }
      }
    }
  }
  CHECK(cases > 100);
  /* a finite gradient whose update overflows theta is caught too */
  float g[3] = {1e30f, 0.0f, 1.0f}, theta[3] = {-3e38f, 0.0f, 0.0f};
  CHECK_INT(nn_sgd_step(theta, NULL, g, 3, 1e9f, 0.0f, 1.0f), 0);
  CHECK(isinf(theta[0]));
}

int main(void) {
  test_legacy_sgd();
  test_state_count();
  test_sgd();
  test_nesterov();
  test_adam();
  test_adamw();
  test_adam_first_step();
  test_clip();
  test_schedules();
  test_update_finite();
  TEST_MAIN_END();
}
