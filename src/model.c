/* MLP forward and backward passes: the seed's four backprop equations, batched as GEMMs.
 *   forward:  z^l = a^{l-1} (W^l)^T + b^l,  a^l = sigma(z^l)
 *   backward: delta^L = dC/da ⊙ sigma'(z^L);  delta^l = (delta^{l+1} W^{l+1}) ⊙ sigma'(z^l)
 *             dC/db^l = sum over the batch of delta^l;  dC/dW^l = (delta^l)^T a^{l-1} */
#include "nnmpi/model.h"

#include "nnmpi/rng.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int nn_layout_init(nn_layout *lay, const int *sizes, int n_sizes, nn_error *e) {
  memset(lay, 0, sizeof *lay);
  if (n_sizes < 2 || n_sizes > NN_MAX_LAYERS + 1)
    return nn_fail(e, NN_ECONFIG, "a model needs 2 to %d layer sizes, got %d", NN_MAX_LAYERS + 1, n_sizes);
  lay->L = n_sizes - 1;
  size_t off = 0;
  for (int l = 0; l < n_sizes; l++) {
    if (sizes[l] < 1) return nn_fail(e, NN_ECONFIG, "layer %d has size %d", l, sizes[l]);
    lay->n[l] = sizes[l];
  }
  for (int l = 1; l <= lay->L; l++) {
    size_t w = (size_t)lay->n[l] * (size_t)lay->n[l - 1];
    if (w / (size_t)lay->n[l] != (size_t)lay->n[l - 1] || off > SIZE_MAX / 8 - w - (size_t)lay->n[l])
      return nn_fail(e, NN_ENOMEM, "the model is too large to address");
    lay->W_off[l] = off;
    lay->b_off[l] = off + w;
    off += w + (size_t)lay->n[l];
  }
  lay->n_params = off;
  return 0;
}

int nn_model_init(nn_model *m, const nn_layout *lay, nn_act hidden, nn_act output, nn_loss loss,
                  float dropout, size_t batch_cap, nn_error *e) {
  memset(m, 0, sizeof *m);
  m->lay = *lay;
  m->hidden = hidden;
  m->output = output;
  m->loss = loss;
  m->batch_cap = batch_cap;
  m->dropout = dropout;
  size_t width_sum = 0, width_max = 0, hidden_sum = 0;
  for (int l = 1; l < lay->L; l++) hidden_sum += (size_t)lay->n[l];
  if (dropout <= 0) hidden_sum = 0;
  for (int l = 0; l <= lay->L; l++) {
    width_sum += (size_t)lay->n[l];
    if ((size_t)lay->n[l] > width_max) width_max = (size_t)lay->n[l];
  }
  if (batch_cap == 0 || width_sum > SIZE_MAX / sizeof(float) / batch_cap / 3)
    return nn_fail(e, NN_ENOMEM, "activation buffers for batch %zu overflow", batch_cap);
  m->acts = malloc(batch_cap * width_sum * sizeof(float));
  m->delta[0] = malloc(2 * batch_cap * width_max * sizeof(float));
  m->mask[0] = hidden_sum ? malloc(batch_cap * hidden_sum * sizeof(float)) : NULL;
  if (!m->acts || !m->delta[0] || (hidden_sum && !m->mask[0])) {
    nn_model_free(m);
    return nn_fail(e, NN_ENOMEM, "cannot allocate %zu MiB of activations",
                   (batch_cap * (width_sum + 2 * width_max) * sizeof(float)) >> 20);
  }
  m->buffer_bytes = batch_cap * (width_sum + 2 * width_max + hidden_sum) * sizeof(float);
  m->delta[1] = m->delta[0] + batch_cap * width_max;
  float *p = m->acts, *q = m->mask[0];
  for (int l = 0; l <= lay->L; l++) {
    m->a[l] = p;
    p += batch_cap * (size_t)lay->n[l];
  }
  for (int l = 1; q && l < lay->L; l++) {
    m->mask[l] = q;
    q += batch_cap * (size_t)lay->n[l];
  }
  return 0;
}

void nn_model_free(nn_model *m) {
  if (!m) return;
  free(m->acts);
  free(m->delta[0]);
  free(m->mask[0]);
  m->acts = m->delta[0] = m->delta[1] = m->mask[0] = NULL;
}

void nn_dense_forward(float *z, const float *a_prev, const float *W, const float *b, size_t B,
                      int n_in, int n_out) {
  for (size_t i = 0; i < B; i++) memcpy(z + i * (size_t)n_out, b, (size_t)n_out * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, n_out, n_in, 1.0f, a_prev, n_in, W,
              n_in, 1.0f, z, n_out);
}

/* dW rows [j0, j1) (n_out, n_in) += delta[:, j0:j1]^T a_prev */
static void weight_grad_rows(float *dW, const float *delta, const float *a_prev, size_t B, int n_in,
                             int n_out, int j0, int j1) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, n_in, (int)B, 1.0f, delta + j0, n_out,
              a_prev, n_in, 1.0f, dW + (size_t)j0 * (size_t)n_in, n_in);
}

/* db (n_out) += column sums of delta (B, n_out) */
static void bias_grad(float *db, const float *delta, size_t B, int n_out) {
  for (size_t i = 0; i < B; i++) {
    const float *d = delta + i * (size_t)n_out;
    for (int j = 0; j < n_out; j++) db[j] += d[j];
  }
}

/* delta_prev (B, n_in) = delta (B, n_out) W (n_out, n_in) */
static void input_grad(float *delta_prev, const float *delta, const float *W, size_t B, int n_in, int n_out) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)B, n_in, n_out, 1.0f, delta, n_out, W,
              n_in, 0.0f, delta_prev, n_in);
}

void nn_dense_backward(float *dW, float *db, float *delta_prev, const float *delta,
                       const float *a_prev, const float *W, size_t B, int n_in, int n_out) {
  weight_grad_rows(dW, delta, a_prev, B, n_in, n_out, 0, n_out);
  bias_grad(db, delta, B, n_out);
  if (delta_prev) input_grad(delta_prev, delta, W, B, n_in, n_out);
}

static void softmax_row(float *a, int n) {
  float mx = a[0];
  for (int j = 1; j < n; j++) mx = a[j] > mx ? a[j] : mx;
  float s = 0.0f;
  for (int j = 0; j < n; j++) s += a[j] = expf(a[j] - mx);
  float inv = 1.0f / s;
  for (int j = 0; j < n; j++) a[j] *= inv;
}

void nn_activate(float *a, nn_act act, size_t B, int n) {
  size_t count = B * (size_t)n;
  switch (act) {
  case NN_ACT_RELU:
    for (size_t i = 0; i < count; i++) a[i] = a[i] > 0.0f ? a[i] : 0.0f;
    break;
  case NN_ACT_SIGMOID:
    for (size_t i = 0; i < count; i++) a[i] = 1.0f / (1.0f + expf(-a[i]));
    break;
  case NN_ACT_TANH:
    for (size_t i = 0; i < count; i++) a[i] = tanhf(a[i]);
    break;
  case NN_ACT_SOFTMAX:
    for (size_t i = 0; i < B; i++) softmax_row(a + i * (size_t)n, n);
    break;
  case NN_ACT_LINEAR:
    break;
  }
}

void nn_activate_backward(float *delta, const float *a, nn_act act, size_t count) {
  switch (act) {
  case NN_ACT_RELU:
    for (size_t i = 0; i < count; i++) delta[i] = a[i] > 0.0f ? delta[i] : 0.0f;
    break;
  case NN_ACT_SIGMOID:
    for (size_t i = 0; i < count; i++) delta[i] *= a[i] * (1.0f - a[i]);
    break;
  case NN_ACT_TANH:
    for (size_t i = 0; i < count; i++) delta[i] *= 1.0f - a[i] * a[i];
    break;
  default: /* linear; softmax is handled with the loss in nn_output_delta */
    break;
  }
}

void nn_dropout_forward_cols(float *a, float *mask, size_t ld, float p, uint64_t key, const size_t *rows,
                             size_t B, int j0, int j1) {
  float keep = 1.0f / (1.0f - p);
  for (size_t i = 0; i < B; i++) {
    nn_rng r;
    nn_rng_init(&r, nn_rng_key(key, rows[i], 0));
    nn_rng_skip(&r, (uint64_t)j0); /* unit j always takes draw j of its row's stream */
    for (int j = j0; j < j1; j++) {
      size_t at = i * ld + (size_t)j;
      mask[at] = nn_rng_uniform(&r) < p ? 0.0f : keep;
      a[at] *= mask[at];
    }
  }
}

void nn_dropout_forward(float *a, float *mask, float p, uint64_t key, const size_t *rows, size_t B, int n) {
  nn_dropout_forward_cols(a, mask, (size_t)n, p, key, rows, B, 0, n);
}

void nn_dropout_backward(float *delta, const float *a, const float *mask, nn_act act, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (mask[i] == 0.0f) {
      delta[i] = 0.0f;
      continue;
    }
    float s = a[i] / mask[i]; /* the activation before dropout */
    float d = act == NN_ACT_RELU ? (s > 0.0f) : act == NN_ACT_SIGMOID ? s * (1.0f - s)
            : act == NN_ACT_TANH ? 1.0f - s * s : 1.0f;
    delta[i] *= mask[i] * d;
  }
}

/* Target of output j for sample i: one-hot of an integer label, or a float target. */
static inline float target(const int32_t *labels, const float *targets, size_t i, int j, int n) {
  return labels ? (float)(labels[i] == j) : targets[i * (size_t)n + j];
}

double nn_output_forward(float *a, nn_act act, nn_loss loss, const int32_t *labels,
                         const float *targets, size_t B, int n) {
  int have_y = labels || targets;
  double total = 0.0;
  for (size_t i = 0; i < B; i++) {
    float *z = a + i * (size_t)n;
    double l = 0.0;
    if (have_y && loss == NN_LOSS_CROSS_ENTROPY && act == NN_ACT_SOFTMAX) {
      /* -sum_j y_j log softmax(z)_j = sum_j y_j (log sum exp(z - max) - (z_j - max)) */
      float mx = z[0];
      for (int j = 1; j < n; j++) mx = z[j] > mx ? z[j] : mx;
      double s = 0.0;
      for (int j = 0; j < n; j++) s += exp((double)z[j] - mx);
      double lse = log(s);
      for (int j = 0; j < n; j++) {
        float y = target(labels, targets, i, j, n);
        if (y != 0.0f) l += y * (lse - ((double)z[j] - mx));
      }
    } else if (have_y && loss == NN_LOSS_CROSS_ENTROPY) { /* sigmoid: binary cross-entropy per output */
      for (int j = 0; j < n; j++) {
        double x = z[j], y = target(labels, targets, i, j, n);
        l += (x > 0 ? x : 0) - x * y + log1p(exp(-fabs(x)));
      }
    }
    nn_activate(z, act, 1, n);
    if (have_y && loss == NN_LOSS_MSE)
      for (int j = 0; j < n; j++) {
        double d = (double)z[j] - target(labels, targets, i, j, n);
        l += 0.5 * d * d;
      }
    total += l;
  }
  return total;
}

void nn_output_delta(float *delta, const float *a, nn_act act, nn_loss loss,
                     const int32_t *labels, const float *targets, size_t B, int n) {
  for (size_t i = 0; i < B; i++) {
    const float *ai = a + i * (size_t)n;
    float *d = delta + i * (size_t)n;
    for (int j = 0; j < n; j++) d[j] = ai[j] - target(labels, targets, i, j, n); /* dC/da for MSE */
    if (loss == NN_LOSS_CROSS_ENTROPY) continue; /* softmax/sigmoid + CE: delta = a - y exactly */
    if (act == NN_ACT_SOFTMAX) {                 /* delta_j = a_j (g_j - sum_k g_k a_k) */
      float dot = 0.0f;
      for (int j = 0; j < n; j++) dot += d[j] * ai[j];
      for (int j = 0; j < n; j++) d[j] = ai[j] * (d[j] - dot);
    } else {
      nn_activate_backward(d, ai, act, (size_t)n);
    }
  }
}

double nn_model_forward(nn_model *m, const float *params, size_t B, const int32_t *labels,
                        const float *targets) {
  const nn_layout *lay = &m->lay;
  for (int l = 1; l <= lay->L; l++) {
    nn_dense_forward(m->a[l], m->a[l - 1], params + lay->W_off[l], params + lay->b_off[l], B,
                     lay->n[l - 1], lay->n[l]);
    if (l < lay->L) nn_activate(m->a[l], m->hidden, B, lay->n[l]);
    if (l < lay->L && m->dropout > 0 && m->dropout_rows)
      nn_dropout_forward(m->a[l], m->mask[l], m->dropout, m->dropout_key + (uint64_t)l, m->dropout_rows, B,
                         lay->n[l]);
  }
  return nn_output_forward(m->a[lay->L], m->output, m->loss, labels, targets, B, lay->n[lay->L]);
}

/* How many row blocks layer l's dW is cut into for the hook (1 without a hook). */
static int slice_blocks(const nn_layout *lay, int l, const nn_grad_hook *hook) {
  if (!hook) return 1;
  size_t size = (size_t)lay->n[l] * (size_t)lay->n[l - 1];
  int blocks = (int)(size / NN_GRAD_BLOCK_MIN);
  if (blocks < 1) blocks = 1;
  if (blocks > hook->max_blocks) blocks = hook->max_blocks;
  if (blocks > lay->n[l]) blocks = lay->n[l];
  return blocks;
}

/* Block b of `blocks` of layer l: rows [*j0, *j1) of W^l, and the slice [*from, *to) of the flat
 * gradient it completes (the last block also carries b^l, which follows W^l). nn_model_backward
 * and nn_model_zero_slices both use it: every rank must report the same slices. */
static void slice(const nn_layout *lay, int l, int b, int blocks, int *j0, int *j1, size_t *from,
                  size_t *to) {
  int n_out = lay->n[l];
  size_t n_in = (size_t)lay->n[l - 1];
  *j0 = (int)((long long)n_out * b / blocks);
  *j1 = (int)((long long)n_out * (b + 1) / blocks);
  *from = lay->W_off[l] + (size_t)*j0 * n_in;
  *to = b + 1 < blocks ? lay->W_off[l] + (size_t)*j1 * n_in : lay->b_off[l] + (size_t)n_out;
}

void nn_model_backward(nn_model *m, const float *params, float *grad, size_t B,
                       const int32_t *labels, const float *targets, const nn_grad_hook *hook) {
  const nn_layout *lay = &m->lay;
  float *d = m->delta[0], *d_prev = m->delta[1];
  nn_output_delta(d, m->a[lay->L], m->output, m->loss, labels, targets, B, lay->n[lay->L]);
  for (int l = lay->L; l >= 1; l--) {
    int n_in = lay->n[l - 1], n_out = lay->n[l];
    float *dW = grad + lay->W_off[l];
    bias_grad(grad + lay->b_off[l], d, B, n_out);
    /* dW in row blocks; each finished block (the last with b^l, which follows W^l) is handed
     * to the hook at once, so its reduction overlaps the remaining GEMMs */
    int blocks = slice_blocks(lay, l, hook), j0, j1;
    for (int b = 0; b < blocks; b++) {
      size_t from, to;
      slice(lay, l, b, blocks, &j0, &j1, &from, &to);
      weight_grad_rows(dW, d, m->a[l - 1], B, n_in, n_out, j0, j1);
      if (hook) hook->ready(hook->ctx, from, to - from);
    }
    if (l > 1) {
      input_grad(d_prev, d, params + lay->W_off[l], B, n_in, n_out);
      if (m->dropout > 0 && m->dropout_rows)
        nn_dropout_backward(d_prev, m->a[l - 1], m->mask[l - 1], m->hidden, B * (size_t)n_in);
      else
        nn_activate_backward(d_prev, m->a[l - 1], m->hidden, B * (size_t)n_in);
      float *t = d;
      d = d_prev;
      d_prev = t;
    }
  }
}

void nn_model_zero_slices(const nn_layout *lay, const nn_grad_hook *hook) {
  for (int l = lay->L; l >= 1; l--) {
    int blocks = slice_blocks(lay, l, hook), j0, j1;
    for (int b = 0; b < blocks; b++) {
      size_t from, to;
      slice(lay, l, b, blocks, &j0, &j1, &from, &to);
      hook->ready(hook->ctx, from, to - from);
    }
  }
}

/* ---- the node-sliced step ---------------------------------------------------------------- */

void nn_part(int n, int q, int S, int *j0, int *j1) {
  *j0 = (int)((long long)n * q / S);
  *j1 = (int)((long long)n * (q + 1) / S);
}

static size_t width_sum(const nn_layout *lay, int hidden_only) {
  size_t w = 0;
  for (int l = hidden_only; l <= lay->L - hidden_only; l++) w += (size_t)lay->n[l];
  return w;
}

size_t nn_node_step_row_bytes(const nn_model *m) {
  /* a^0..a^L, then delta^1..delta^L within a second sum of all widths; the row id */
  return 2 * width_sum(&m->lay, 0) * sizeof(float) + sizeof(size_t);
}

size_t nn_node_step_mask_bytes(const nn_model *m) {
  return m->dropout > 0 && m->lay.L > 1 ? width_sum(&m->lay, 1) * sizeof(float) : 0;
}

static char *carve(char **at, size_t bytes) {
  char *p = *at;
  *at += (bytes + 63) / 64 * 64;
  return p;
}

size_t nn_node_step_mask_rows(const nn_node_step *s) { return s->by_units ? s->rows : s->B; }

void nn_node_step_bind(nn_node_step *s, const nn_model *m, void *shared, float *masks) {
  const nn_layout *lay = &m->lay;
  char *at = (char *)(((uintptr_t)shared + 63) / 64 * 64);
  size_t R = s->rows;
  memset(s->a, 0, sizeof s->a);
  memset(s->delta, 0, sizeof s->delta);
  memset(s->mask, 0, sizeof s->mask);
  for (int l = 0; l <= lay->L; l++) s->a[l] = (float *)carve(&at, R * (size_t)lay->n[l] * sizeof(float));
  for (int l = 1; l <= lay->L; l++) s->delta[l] = (float *)carve(&at, R * (size_t)lay->n[l] * sizeof(float));
  s->row_ids = (size_t *)carve(&at, R * sizeof(size_t));
  for (int l = 1; masks && l < lay->L; l++) {
    s->mask[l] = masks;
    masks += nn_node_step_mask_rows(s) * (size_t)lay->n[l];
  }
}

static int dropout_on(const nn_model *m) { return m->dropout > 0 && m->dropout_rows; }

void nn_node_forward_layer(const nn_model *m, const nn_node_step *s, const float *params, int l) {
  const nn_layout *lay = &m->lay;
  int n_in = lay->n[l - 1], n_out = lay->n[l], hidden = l < lay->L, j0, j1;
  const float *W = params + lay->W_off[l], *b = params + lay->b_off[l];
  if (!s->by_units) { /* this rank's rows, every unit, as nn_model_forward */
    size_t B = s->B, r0 = s->row0;
    if (B == 0) return;
    float *a = s->a[l] + r0 * (size_t)n_out;
    nn_dense_forward(a, s->a[l - 1] + r0 * (size_t)n_in, W, b, B, n_in, n_out);
    if (!hidden) return;
    nn_activate(a, m->hidden, B, n_out);
    if (dropout_on(m))
      nn_dropout_forward(a, s->mask[l], m->dropout, m->dropout_key + (uint64_t)l, s->row_ids + r0, B, n_out);
    return;
  }
  nn_part(n_out, s->part, s->parts, &j0, &j1); /* every row, this part's units */
  if (j1 == j0 || s->rows == 0) return;
  float *z = s->a[l];
  /* z starts as the bias and the GEMM adds onto it (beta = 1): OpenBLAS then skips its own
   * pass that zeroes C for beta = 0, and the activation pass has no bias to add */
  for (size_t i = 0; i < s->rows; i++)
    memcpy(z + i * (size_t)n_out + j0, b + j0, (size_t)(j1 - j0) * sizeof(float));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)s->rows, j1 - j0, n_in, 1.0f, s->a[l - 1], n_in,
              W + (size_t)j0 * (size_t)n_in, n_in, 1.0f, z + j0, n_out);
  if (!hidden) return;
  for (size_t i = 0; i < s->rows; i++) nn_activate(z + i * (size_t)n_out + j0, m->hidden, 1, j1 - j0);
  if (dropout_on(m))
    nn_dropout_forward_cols(z, s->mask[l], (size_t)n_out, m->dropout, m->dropout_key + (uint64_t)l, s->row_ids,
                            s->rows, j0, j1);
}

double nn_node_output(const nn_model *m, const nn_node_step *s, const int32_t *labels, const float *targets) {
  int L = m->lay.L, n = m->lay.n[L];
  if (s->B == 0) return 0.0;
  float *a = s->a[L] + s->row0 * (size_t)n;
  double loss = nn_output_forward(a, m->output, m->loss, labels, targets, s->B, n);
  nn_output_delta(s->delta[L] + s->row0 * (size_t)n, a, m->output, m->loss, labels, targets, s->B, n);
  return loss;
}

void nn_node_delta_layer(const nn_model *m, const nn_node_step *s, const float *params, int l) {
  const nn_layout *lay = &m->lay;
  int n_in = lay->n[l - 1], n_out = lay->n[l], k0 = 0, k1 = n_in;
  size_t r0 = s->by_units ? 0 : s->row0, rows = s->by_units ? s->rows : s->B;
  if (s->by_units) nn_part(n_in, s->part, s->parts, &k0, &k1);
  if (k1 == k0 || rows == 0) return;
  /* columns [k0, k1) of delta^{l-1} = (delta^l W^l) ⊙ sigma'(z^{l-1}) for rows [r0, r0 + rows):
   * by units, the units of layer l-1 this part computed in the forward pass, every row; by rows,
   * every unit, this rank's rows. Either way the dropout masks read are this rank's own. */
  float *dp = s->delta[l - 1] + r0 * (size_t)n_in;
  const float *ap = s->a[l - 1] + r0 * (size_t)n_in, *mask = s->mask[l - 1];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, k1 - k0, n_out, 1.0f,
              s->delta[l] + r0 * (size_t)n_out, n_out, params + lay->W_off[l] + k0, n_in, 0.0f, dp + k0, n_in);
  for (size_t i = 0; i < rows; i++) {
    size_t at = i * (size_t)n_in + (size_t)k0;
    if (dropout_on(m))
      nn_dropout_backward(dp + at, ap + at, mask + at, m->hidden, (size_t)(k1 - k0));
    else
      nn_activate_backward(dp + at, ap + at, m->hidden, (size_t)(k1 - k0));
  }
}

void nn_node_grad_units(const nn_model *m, const nn_node_step *s, float *grad) {
  const nn_layout *lay = &m->lay;
  size_t R = s->rows;
  for (int l = lay->L; l >= 1; l--) { /* rows [j0, j1) of dW^l and db^l, summed over the R rows */
    int n_in = lay->n[l - 1], n_out = lay->n[l], j0, j1;
    nn_part(n_out, s->part, s->parts, &j0, &j1);
    if (j1 == j0) continue;
    const float *d = s->delta[l];
    float *dW = grad + lay->W_off[l] + (size_t)j0 * (size_t)n_in, *db = grad + lay->b_off[l] + j0;
    if (R > 0)
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j1 - j0, n_in, (int)R, 1.0f, d + j0, n_out,
                  s->a[l - 1], n_in, 0.0f, dW, n_in);
    else
      memset(dW, 0, (size_t)(j1 - j0) * (size_t)n_in * sizeof(float));
    memset(db, 0, (size_t)(j1 - j0) * sizeof(float));
    for (size_t i = 0; i < R; i++) {
      const float *di = d + i * (size_t)n_out + j0;
      for (int j = 0; j < j1 - j0; j++) db[j] += di[j];
    }
  }
}

double nn_node_forward(const nn_model *m, const nn_node_step *s, const float *params, const int32_t *labels,
                       const float *targets) {
  if (s->by_units) s->sync(s->ctx); /* every rank's input rows are in */
  for (int l = 1; l <= m->lay.L; l++) {
    nn_node_forward_layer(m, s, params, l);
    if (s->by_units) s->sync(s->ctx); /* layer l's units are all in */
  }
  return nn_node_output(m, s, labels, targets);
}

void nn_node_backward(const nn_model *m, const nn_node_step *s, const float *params, float *grad) {
  if (s->by_units) s->sync(s->ctx); /* delta^L of every rank's rows is in */
  for (int l = m->lay.L; l >= 2; l--) {
    nn_node_delta_layer(m, s, params, l);
    if (s->by_units) s->sync(s->ctx); /* delta^{l-1}'s units are all in, and W^l is read */
  }
  /* By rows: every rank's rows of delta are in, and no rank reads W any more this step, so
   * each may update its ranges once its gradient rows are done (by units, the syncs above). */
  if (!s->by_units) s->sync(s->ctx);
  nn_node_grad_units(m, s, grad);
}

static int argmax(const float *r, int n) {
  int best = 0;
  for (int j = 1; j < n; j++)
    if (r[j] > r[best]) best = j;
  return best;
}

size_t nn_count_correct(const float *a, const int32_t *labels, size_t B, int n) {
  size_t correct = 0;
  for (size_t i = 0; i < B; i++) correct += argmax(a + i * (size_t)n, n) == labels[i];
  return correct;
}

void nn_confusion_add(double *confusion, const float *a, const int32_t *labels, size_t B, int n) {
  for (size_t i = 0; i < B; i++) confusion[(size_t)labels[i] * (size_t)n + (size_t)argmax(a + i * (size_t)n, n)] += 1.0;
}
