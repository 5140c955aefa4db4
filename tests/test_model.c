/* The model's kernels against naive loops, the seed's worked example, and backprop against
 * central finite differences (in double) for every activation x output x loss combination. */
#include <stdlib.h>
#include <string.h>

#include "nnmpi/model.h"
#include "nnmpi/rng.h"
#include "test.h"

/* ---- naive references ---- */

static void dense_forward_ref(float *z, const float *a, const float *W, const float *b, size_t B,
                              int n_in, int n_out) {
  for (size_t i = 0; i < B; i++)
    for (int j = 0; j < n_out; j++) {
      double s = b[j];
      for (int k = 0; k < n_in; k++) s += (double)W[j * n_in + k] * a[i * n_in + k];
      z[i * n_out + j] = (float)s;
    }
}

static void dense_backward_ref(float *dW, float *db, float *dprev, const float *delta,
                               const float *a, const float *W, size_t B, int n_in, int n_out) {
  for (int j = 0; j < n_out; j++) {
    for (int k = 0; k < n_in; k++) {
      double s = 0;
      for (size_t i = 0; i < B; i++) s += (double)delta[i * n_out + j] * a[i * n_in + k];
      dW[j * n_in + k] += (float)s;
    }
    double s = 0;
    for (size_t i = 0; i < B; i++) s += delta[i * n_out + j];
    db[j] += (float)s;
  }
  for (size_t i = 0; i < B; i++)
    for (int k = 0; k < n_in; k++) {
      double s = 0;
      for (int j = 0; j < n_out; j++) s += (double)delta[i * n_out + j] * W[j * n_in + k];
      dprev[i * n_in + k] = (float)s;
    }
}

static double act_ref(double z, nn_act act) {
  switch (act) {
  case NN_ACT_RELU: return z > 0 ? z : 0;
  case NN_ACT_SIGMOID: return 1 / (1 + exp(-z));
  case NN_ACT_TANH: return tanh(z);
  default: return z;
  }
}

/* The cost of the whole batch, summed over samples, entirely in double from the definitions:
 * MSE 1/2 ||y - a||^2, softmax cross-entropy -sum y log a, sigmoid cross-entropy per output. */
static double loss_ref(const double *params, const nn_layout *lay, nn_act hidden, nn_act out,
                       nn_loss loss, const float *X, const int32_t *labels, const float *targets,
                       size_t B, float *const *masks) {
  double total = 0, a[64], z[64];
  for (size_t i = 0; i < B; i++) {
    int n_prev = lay->n[0];
    for (int k = 0; k < n_prev; k++) a[k] = X[i * n_prev + k];
    for (int l = 1; l <= lay->L; l++) {
      int n = lay->n[l];
      for (int j = 0; j < n; j++) {
        double s = params[lay->b_off[l] + j];
        for (int k = 0; k < n_prev; k++) s += params[lay->W_off[l] + j * n_prev + k] * a[k];
        z[j] = s;
      }
      nn_act act = l < lay->L ? hidden : out;
      if (act == NN_ACT_SOFTMAX) {
        double mx = z[0], sum = 0;
        for (int j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
        for (int j = 0; j < n; j++) sum += exp(z[j] - mx);
        for (int j = 0; j < n; j++) a[j] = exp(z[j] - mx) / sum;
      } else {
        for (int j = 0; j < n; j++) a[j] = act_ref(z[j], act);
      }
      if (masks && l < lay->L) /* dropout with a fixed mask */
        for (int j = 0; j < n; j++) a[j] *= masks[l][i * n + j];
      n_prev = n;
    }
    for (int j = 0; j < n_prev; j++) {
      double y = labels ? (labels[i] == j) : targets[i * n_prev + j];
      if (loss == NN_LOSS_MSE) total += 0.5 * (y - a[j]) * (y - a[j]);
      else if (out == NN_ACT_SOFTMAX) total -= y * log(a[j]);
      else total -= y * log(a[j]) + (1 - y) * log(1 - a[j]);
    }
  }
  return total;
}

static void fill(float *x, size_t n, nn_rng *r, double scale) {
  for (size_t i = 0; i < n; i++) x[i] = (float)(scale * nn_rng_normal(r));
}

static void test_kernels_match_reference(void) {
  nn_rng r;
  nn_rng_init(&r, 7);
  enum { B = 9, NI = 13, NO = 11 };
  float a[B * NI], W[NO * NI], b[NO], z[B * NO], zr[B * NO], delta[B * NO];
  float dW[NO * NI] = {0}, dWr[NO * NI] = {0}, db[NO] = {0}, dbr[NO] = {0}, dp[B * NI], dpr[B * NI];
  fill(a, B * NI, &r, 1);
  fill(W, NO * NI, &r, 1);
  fill(b, NO, &r, 1);
  fill(delta, B * NO, &r, 1);
  nn_dense_forward(z, a, W, b, B, NI, NO);
  dense_forward_ref(zr, a, W, b, B, NI, NO);
  for (int i = 0; i < B * NO; i++) CHECK_NEAR(z[i], zr[i], 1e-4);
  for (int rep = 0; rep < 2; rep++) { /* twice: backward must accumulate into dW and db */
    nn_dense_backward(dW, db, dp, delta, a, W, B, NI, NO);
    dense_backward_ref(dWr, dbr, dpr, delta, a, W, B, NI, NO);
  }
  for (int i = 0; i < NO * NI; i++) CHECK_NEAR(dW[i], dWr[i], 1e-4);
  for (int i = 0; i < NO; i++) CHECK_NEAR(db[i], dbr[i], 1e-4);
  for (int i = 0; i < B * NI; i++) CHECK_NEAR(dp[i], dpr[i], 1e-4);
}

/* The seed's example: W = [[5,2],[3,6]], a0 = [10,20], b = 6, ReLU gives z = a = [96,156]. */
static void test_worked_example(void) {
  nn_layout lay;
  nn_error e = {0};
  int sizes[] = {2, 2};
  CHECK_INT(nn_layout_init(&lay, sizes, 2, &e), 0);
  float params[6];
  params[lay.W_off[1] + 0] = 5, params[lay.W_off[1] + 1] = 2;
  params[lay.W_off[1] + 2] = 3, params[lay.W_off[1] + 3] = 6;
  params[lay.b_off[1] + 0] = 6, params[lay.b_off[1] + 1] = 6;
  float a0[2] = {10, 20}, z[2];
  nn_dense_forward(z, a0, params + lay.W_off[1], params + lay.b_off[1], 1, 2, 2);
  CHECK_NEAR(z[0], 96, 0);
  CHECK_NEAR(z[1], 156, 0);
  nn_activate(z, NN_ACT_RELU, 1, 2);
  CHECK_NEAR(z[0], 96, 0);
  CHECK_NEAR(z[1], 156, 0);
  /* and through the whole model with a linear output layer */
  nn_model m;
  CHECK_INT(nn_model_init(&m, &lay, NN_ACT_RELU, NN_ACT_LINEAR, NN_LOSS_MSE, 0, 1, &e), 0);
  m.a[0][0] = 10, m.a[0][1] = 20;
  float target[2] = {100, 150};
  double loss = nn_model_forward(&m, params, 1, NULL, target);
  CHECK_NEAR(m.a[1][0], 96, 0);
  CHECK_NEAR(m.a[1][1], 156, 0);
  CHECK_NEAR(loss, 0.5 * (16 + 36), 1e-9); /* 1/2 ((96-100)^2 + (156-150)^2) */
  nn_model_free(&m);
}

/* Backprop against central differences of loss_ref; fails on an all-zero gradient too. */
static void gradient_check(nn_act hidden, nn_act out, nn_loss loss, int use_labels, float dropout) {
  enum { B = 4 };
  int sizes[] = {5, 7, 6, 4};
  nn_layout lay;
  nn_model m;
  nn_error e = {0};
  nn_layout_init(&lay, sizes, 4, &e);
  CHECK_INT(nn_model_init(&m, &lay, hidden, out, loss, dropout, B, &e), 0);
  size_t rows[B] = {11, 3, 40, 7};
  m.dropout_key = 99;
  m.dropout_rows = dropout > 0 ? rows : NULL;
  nn_rng r;
  nn_rng_init(&r, 100 + hidden * 10 + out * 3 + loss);
  size_t n = lay.n_params;
  float *params = malloc(n * sizeof *params), *grad = calloc(n, sizeof *grad);
  double *pd = calloc(n, sizeof *pd);
  float X[B * 5], targets[B * 4];
  int32_t labels[B] = {0, 3, 1, 2};
  fill(params, n, &r, 0.7);
  fill(X, B * 5, &r, 1);
  for (int i = 0; i < B * 4; i++) targets[i] = (float)nn_rng_uniform(&r);
  const int32_t *lab = use_labels ? labels : NULL;
  const float *tgt = use_labels ? NULL : targets;
  for (size_t i = 0; i < B * 5; i++) m.a[0][i] = X[i];
  double lf = nn_model_forward(&m, params, B, lab, tgt);
  nn_model_backward(&m, params, grad, B, lab, tgt, NULL);

  for (size_t i = 0; i < n; i++) pd[i] = params[i];
  float *const *masks = dropout > 0 ? m.mask : NULL;
  double l0 = loss_ref(pd, &lay, hidden, out, loss, X, lab, tgt, B, masks);
  CHECK_NEAR(lf, l0, 1e-4 * (1 + fabs(l0)));
  double max_err = 0, max_g = 0, max_bp = 0, h = 1e-5;
  for (size_t i = 0; i < n; i++) {
    double keep = pd[i];
    pd[i] = keep + h;
    double lp = loss_ref(pd, &lay, hidden, out, loss, X, lab, tgt, B, masks);
    pd[i] = keep - h;
    double lm = loss_ref(pd, &lay, hidden, out, loss, X, lab, tgt, B, masks);
    pd[i] = keep;
    double g = (lp - lm) / (2 * h);
    max_err = fmax(max_err, fabs(g - grad[i]));
    max_g = fmax(max_g, fabs(g));
    max_bp = fmax(max_bp, fabs(grad[i]));
  }
  if (!(max_g > 1e-3 && max_bp > 1e-3 && max_err <= 2e-3 * max_g)) {
    fprintf(stderr, "gradient check failed: hidden %s, output %s, loss %s, %s, dropout %g: max |fd - bp| = %g, "
            "max |fd| = %g, max |bp| = %g\n", nn_act_name(hidden), nn_act_name(out), nn_loss_name(loss),
            use_labels ? "labels" : "targets", dropout, max_err, max_g, max_bp);
    test_failures++;
  }
  free(params);
  free(grad);
  free(pd);
  nn_model_free(&m);
}

static void test_gradients(void) {
  nn_act hidden[] = {NN_ACT_RELU, NN_ACT_SIGMOID, NN_ACT_TANH};
  nn_act outs[] = {NN_ACT_SOFTMAX, NN_ACT_SIGMOID, NN_ACT_LINEAR};
  int checked = 0;
  for (int h = 0; h < 3; h++)
    for (int o = 0; o < 3; o++)
      for (int l = 0; l < 2; l++) {
        nn_loss loss = l ? NN_LOSS_MSE : NN_LOSS_CROSS_ENTROPY;
        if (outs[o] == NN_ACT_LINEAR && loss == NN_LOSS_CROSS_ENTROPY) continue; /* refused by config */
        gradient_check(hidden[h], outs[o], loss, 1, 0);
        if (outs[o] != NN_ACT_SOFTMAX) gradient_check(hidden[h], outs[o], loss, 0, 0);
        if (outs[o] == NN_ACT_SOFTMAX) gradient_check(hidden[h], outs[o], loss, 1, 0.3f);
        checked++;
      }
  CHECK_INT(checked, 15);
}

/* Dropout masks: about p of the units dropped, the rest scaled by 1/(1-p); the mask of a row
 * depends on its row id, not on its position in the batch. */
static void test_dropout_mask(void) {
  enum { B = 64, N = 100 };
  static float a[B * N], mask[B * N], a2[2 * N], mask2[2 * N];
  size_t rows[B], rows2[2];
  for (int i = 0; i < B; i++) rows[i] = 1000 + (size_t)i;
  for (int i = 0; i < B * N; i++) a[i] = 1.0f;
  nn_dropout_forward(a, mask, 0.25f, 5, rows, B, N);
  int dropped = 0;
  for (int i = 0; i < B * N; i++) {
    dropped += mask[i] == 0.0f;
    CHECK(mask[i] == 0.0f || fabsf(mask[i] - 1.0f / 0.75f) < 1e-6f);
    CHECK(a[i] == mask[i]);
  }
  CHECK(dropped > 0.22 * B * N && dropped < 0.28 * B * N);
  rows2[0] = rows[17], rows2[1] = rows[3]; /* the same rows elsewhere in another batch */
  for (int i = 0; i < 2 * N; i++) a2[i] = 1.0f;
  nn_dropout_forward(a2, mask2, 0.25f, 5, rows2, 2, N);
  CHECK(memcmp(mask2, mask + 17 * N, N * sizeof(float)) == 0);
  CHECK(memcmp(mask2 + N, mask + 3 * N, N * sizeof(float)) == 0);
}

/* The hook's slices tile the gradient exactly once, last layer first, and the blocked
 * backward gives the same gradient as the unblocked one. */
typedef struct slices { size_t offset[64], count[64]; int n; } slices;
static void record(void *ctx, size_t offset, size_t count) {
  slices *s = ctx;
  if (s->n < 64) s->offset[s->n] = offset, s->count[s->n] = count;
  s->n++;
}

static void test_backward_hook(void) {
  enum { B = 16 };
  int sizes[] = {300, 512, 40, 7}; /* W1 = 153600 weights: 2 blocks of >= 64 Ki */
  nn_layout lay;
  nn_model m;
  nn_error e = {0};
  nn_layout_init(&lay, sizes, 4, &e);
  CHECK_INT(nn_model_init(&m, &lay, NN_ACT_TANH, NN_ACT_SOFTMAX, NN_LOSS_CROSS_ENTROPY, 0, B, &e), 0);
  nn_rng r;
  nn_rng_init(&r, 3);
  size_t n = lay.n_params;
  float *params = malloc(n * sizeof *params), *g1 = calloc(n, sizeof *g1), *g2 = calloc(n, sizeof *g2);
  int32_t labels[B];
  fill(params, n, &r, 0.1);
  fill(m.a[0], B * 300, &r, 1);
  for (int i = 0; i < B; i++) labels[i] = i % 7;
  nn_model_forward(&m, params, B, labels, NULL);
  nn_model_backward(&m, params, g1, B, labels, NULL, NULL);
  slices got = {.n = 0};
  nn_grad_hook hook = {.ready = record, .ctx = &got, .max_blocks = 4};
  nn_model_backward(&m, params, g2, B, labels, NULL, &hook);
  CHECK_INT(got.n, 4); /* layer 3, layer 2, and layer 1 in 2 blocks */
  CHECK_INT(got.offset[0], lay.W_off[3]);
  CHECK_INT(got.offset[0] + got.count[0], n);
  size_t covered = 0;
  for (int i = 0; i < got.n && i < 64; i++) covered += got.count[i];
  CHECK_INT(covered, n);
  CHECK_INT(got.offset[got.n - 1] + got.count[got.n - 1], lay.W_off[2]); /* W1 rows, then b1 */
  CHECK_INT(got.offset[got.n - 2], 0);
  double max_diff = 0;
  for (size_t i = 0; i < n; i++) max_diff = fmax(max_diff, fabs((double)g1[i] - g2[i]));
  CHECK(max_diff < 1e-5);
  free(params), free(g1), free(g2);
  nn_model_free(&m);
}

/* The node step, its phases run part by part as S ranks would between their syncs, against
 * nn_model_forward/backward over the same R rows: the same loss, outputs and gradient (every
 * entry written), split by units and by rows, with and without dropout, with uneven rows per
 * rank and with layers narrower than S (empty parts). The shared buffers start as NaN, and by
 * rows each rank runs all of its phases before the next rank starts: a phase that read another
 * rank's rows before the sync would read NaN. */
static void node_step_case(int S, float dropout, nn_act hidden, int by_units) {
  enum { R = 11, L = 3 };
  int sizes[L + 1] = {13, 17, 4, 3};
  static const size_t rows_of[6][5] = {{0}, {R}, {4, 7}, {5, 0, 6}, {2, 3, 0, 6}, {3, 2, 0, 4, 2}};
  const size_t *rows_q = rows_of[S];
  nn_layout lay;
  nn_model m;
  nn_error e = {0};
  nn_layout_init(&lay, sizes, L + 1, &e);
  CHECK_INT(nn_model_init(&m, &lay, hidden, NN_ACT_SOFTMAX, NN_LOSS_CROSS_ENTROPY, dropout, R, &e), 0);
  size_t n = lay.n_params, ids[R];
  int32_t labels[R];
  nn_rng r;
  nn_rng_init(&r, 11);
  float *params = malloc(n * sizeof(float)), *gref = calloc(n, sizeof(float)), *grad = malloc(n * sizeof(float));
  fill(params, n, &r, 0.5);
  fill(m.a[0], R * 13, &r, 1);
  for (int i = 0; i < R; i++) labels[i] = (i * 5) % 3, ids[i] = 100 + 7 * (size_t)i;
  m.dropout_rows = ids;
  m.dropout_key = 99;
  double loss_ref = nn_model_forward(&m, params, R, labels, NULL);
  nn_model_backward(&m, params, gref, R, labels, NULL, NULL);

  size_t shared_bytes = R * nn_node_step_row_bytes(&m) + NN_NODE_STEP_SLACK;
  char *shared = malloc(shared_bytes);
  for (size_t i = 0; i + sizeof(float) <= shared_bytes; i += sizeof(float)) {
    float nan = NAN;
    memcpy(shared + i, &nan, sizeof nan);
  }
  float *masks[5];
  nn_node_step st[5];
  size_t row0 = 0;
  for (int q = 0; q < S; q++) {
    st[q] = (nn_node_step){.part = q, .parts = S, .by_units = by_units, .rows = R, .row0 = row0, .B = rows_q[q]};
    row0 += rows_q[q];
    size_t mask_bytes = nn_node_step_mask_rows(&st[q]) * nn_node_step_mask_bytes(&m);
    masks[q] = mask_bytes ? malloc(mask_bytes) : NULL;
    nn_node_step_bind(&st[q], &m, shared, masks[q]);
  }
  CHECK_INT(row0, R);
  memcpy(st[0].a[0], m.a[0], R * 13 * sizeof(float));
  memcpy(st[0].row_ids, ids, sizeof ids);
  for (size_t i = 0; i < n; i++) grad[i] = NAN; /* every entry must be written */
  double loss = 0;
  if (by_units) { /* a sync after every phase: each phase for every part, then the next */
    for (int l = 1; l <= L; l++)
      for (int q = 0; q < S; q++) nn_node_forward_layer(&m, &st[q], params, l);
    for (int q = 0; q < S; q++) loss += nn_node_output(&m, &st[q], labels + st[q].row0, NULL);
    for (int l = L; l >= 2; l--)
      for (int q = 0; q < S; q++) nn_node_delta_layer(&m, &st[q], params, l);
  } else { /* no sync until the deltas are done: each part runs them all in turn */
    for (int q = 0; q < S; q++) {
      for (int l = 1; l <= L; l++) nn_node_forward_layer(&m, &st[q], params, l);
      loss += nn_node_output(&m, &st[q], labels + st[q].row0, NULL);
      for (int l = L; l >= 2; l--) nn_node_delta_layer(&m, &st[q], params, l);
    }
  }
  for (int q = 0; q < S; q++) nn_node_grad_units(&m, &st[q], grad);
  CHECK_NEAR(loss, loss_ref, 1e-4 * fabs(loss_ref));
  double worst = 0;
  for (int i = 0; i < R * 3; i++) worst = fmax(worst, fabs((double)st[0].a[L][i] - m.a[L][i]));
  CHECK(worst < 1e-5);
  worst = 0;
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)grad[i] - gref[i]) / (1 + fabs(gref[i])));
  if (!(worst < 1e-5))
    fprintf(stderr, "node step S=%d dropout=%g by_units=%d: gradient differs by %g\n", S, dropout, by_units, worst);
  CHECK(worst < 1e-5); /* also fails on a NaN: an entry nobody wrote */
  for (int q = 0; q < S; q++) free(masks[q]);
  free(shared), free(params), free(gref), free(grad);
  nn_model_free(&m);
}

static void test_node_step(void) {
  for (int S = 1; S <= 5; S++) {
    for (int by_units = 0; by_units <= 1; by_units++) {
      node_step_case(S, 0.0f, NN_ACT_TANH, by_units);
      node_step_case(S, 0.3f, NN_ACT_RELU, by_units);
    }
  }
  nn_rng a, b; /* skip-ahead lands where the draws would */
  nn_rng_init(&a, 5);
  nn_rng_init(&b, 5);
  for (int i = 0; i < 37; i++) nn_rng_u64(&a);
  nn_rng_skip(&b, 37);
  CHECK(nn_rng_u64(&a) == nn_rng_u64(&b));
}

static void test_layout(void) {
  nn_layout lay;
  nn_error e = {0};
  int sizes[] = {784, 256, 128, 10};
  CHECK_INT(nn_layout_init(&lay, sizes, 4, &e), 0);
  CHECK_INT(lay.n_params, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10);
  CHECK_INT(lay.W_off[1], 0);
  CHECK_INT(lay.b_off[1], 784 * 256);
  CHECK_INT(lay.W_off[2], 784 * 256 + 256);
  CHECK_INT(lay.b_off[3], lay.n_params - 10);
  float a[6] = {0.1f, 0.9f, 0.0f, 0.5f, 0.2f, 0.3f};
  int32_t lab[2] = {1, 2};
  CHECK_INT(nn_count_correct(a, lab, 2, 3), 1);
}

/* The replica check's hash: equal buffers hash alike, and flipping any one bit of any float
 * (in the 4-lane body or the tail) changes it, as does the length. */
static void test_hash_floats(void) {
  float x[11];
  for (int i = 0; i < 11; i++) x[i] = 0.1f * (float)i - 0.3f;
  for (size_t n = 1; n <= 11; n++) {
    uint64_t h = nn_hash_floats(x, n);
    CHECK(h == nn_hash_floats(x, n));
    CHECK(h != nn_hash_floats(x, n - 1));
    int same = 0;
    for (size_t i = 0; i < n; i++)
      for (int bit = 0; bit < 32; bit++) {
        float y[11];
        memcpy(y, x, sizeof y);
        uint32_t u;
        memcpy(&u, &y[i], sizeof u);
        u ^= 1u << bit;
        memcpy(&y[i], &u, sizeof u);
        same += nn_hash_floats(y, n) == h;
      }
    CHECK_INT(same, 0);
  }
  float z[4] = {0}, nz[4] = {0, 0, 0, -0.0f}; /* -0 and +0 differ in bits: replicas must match bits */
  CHECK(nn_hash_floats(z, 4) != nn_hash_floats(nz, 4));
}

int main(void) {
  test_hash_floats();
  test_layout();
  test_kernels_match_reference();
  test_worked_example();
  test_gradients();
  test_dropout_mask();
  test_backward_hook();
  test_node_step();
  TEST_MAIN_END();
}
