/* The MLP: parameter layout in one flat buffer, and the forward and backward passes over a
 * batch as cblas_sgemm calls. Pure: no MPI, no I/O; memory is allocated only by
 * nn_model_init, never inside forward or backward.
 *
 * Layer l (1..L) has W^l of shape (n_l, n_{l-1}) (row j = node of layer l, column k = node of
 * layer l-1) and b^l of n_l entries, stored as W^1, b^1, W^2, b^2, ... in one float buffer;
 * the gradient buffer has the same layout. Activations are row-major (batch, n_l): each row is
 * one sample, so z^l = a^{l-1} (W^l)^T + b^l is one GEMM for the whole batch. */
#ifndef NNMPI_MODEL_H
#define NNMPI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "nnmpi/config.h"

typedef struct nn_layout {
  int L;                             /* weight layers */
  int n[NN_MAX_LAYERS + 1];          /* n[0] inputs ... n[L] outputs */
  size_t W_off[NN_MAX_LAYERS + 1];   /* offset of W^l in the flat buffer (index l) */
  size_t b_off[NN_MAX_LAYERS + 1];   /* offset of b^l */
  size_t n_params;
} nn_layout;

/* Fails with NN_ENOMEM when the sizes would overflow. */
int nn_layout_init(nn_layout *lay, const int *sizes, int n_sizes, nn_error *e);

typedef struct nn_model {
  nn_layout lay;
  nn_act hidden, output;
  nn_loss loss;
  size_t batch_cap;                  /* largest batch the buffers hold */
  size_t buffer_bytes;               /* activations, deltas and dropout masks, allocated */
  float *acts;                       /* a^0 .. a^L, each (batch_cap, n_l), one allocation */
  float *a[NN_MAX_LAYERS + 1];       /* views into acts */
  float *delta[2];                   /* ping-pong (batch_cap, max n_l) for backprop */
  /* Dropout on hidden layers, active only while dropout_rows is non-NULL (training). The mask
   * of (layer, sample, unit) depends only on (dropout_key, layer, dropout_rows[sample]), so it is
   * the same whatever rank processes the sample. */
  float dropout;                     /* probability of dropping a hidden unit, 0 = off */
  uint64_t dropout_key;              /* e.g. nn_rng_key(seed, step, ...) */
  const size_t *dropout_rows;        /* (B) global row ids of the batch */
  float *mask[NN_MAX_LAYERS + 1];    /* (batch_cap, n_l) per hidden layer: 0 or 1/(1-p) */
} nn_model;

int nn_model_init(nn_model *m, const nn_layout *lay, nn_act hidden, nn_act output, nn_loss loss,
                  float dropout, size_t batch_cap, nn_error *e);
void nn_model_free(nn_model *m);

/* Forward pass over the batch of B rows already in m->a[0] (B, n_0). Returns the summed
 * per-sample loss when labels (int class ids, (B)) or targets ((B, n_L)) are given, else 0. */
double nn_model_forward(nn_model *m, const float *params, size_t B, const int32_t *labels,
                        const float *targets);

/* Told as soon as a slice of the gradient is final, so that its reduction can start while
 * backprop goes on (last layer first). Slices are contiguous ranges of the flat buffer that
 * tile [0, n_params) exactly once; b^l comes with the last slice of W^l. */
typedef struct nn_grad_hook {
  void (*ready)(void *ctx, size_t offset, size_t count);
  void *ctx;
  int max_blocks;   /* a layer's dW is cut into at most this many row blocks */
} nn_grad_hook;
#define NN_GRAD_BLOCK_MIN ((size_t)1 << 16) /* a block has at least 64 Ki weights */

/* Backward pass after nn_model_forward on the same batch: adds the batch's summed gradient
 * (not divided by B) into grad, which has the layout of params. hook may be NULL. */
void nn_model_backward(nn_model *m, const float *params, float *grad, size_t B,
                       const int32_t *labels, const float *targets, const nn_grad_hook *hook);

/* Report the slices nn_model_backward would report, without computing (a rank with nothing to
 * compute must still take part in the same reductions). */
void nn_model_zero_slices(const nn_layout *lay, const nn_grad_hook *hook);

/* ---- the node step ([train] allreduce = shm) ----------------------------------------------
 * The S ranks of a node put their batches into one matrix of R rows in memory they share (rank
 * q's B_q rows start at row row0_q). The forward pass and the deltas are split one of two ways:
 *   by rows:  each rank runs every layer for its own rows, as nn_model_forward/backward would.
 *             No sync until the deltas are done: 1 per step.
 *   by units: part q computes the units [j0, j1) = nn_part(n_l, q, S) of every layer for all R
 *             rows: its columns of z, a and delta. Each GEMM reads 1/S of W^l and has R rows,
 *             but every layer ends with a sync: 2L + 1 per step.
 * Then part q computes rows [j0, j1) of dW^l and db^l for every layer, summed over all R rows
 * (one GEMM per layer with K = R), so the node's gradient needs no reduction. Every part writes
 * only its own rows or columns, so the result does not depend on timing. Up to float rounding it
 * equals nn_model_backward over the R rows; the dropout masks are nn_dropout_forward's. s->sync
 * is a barrier that makes every rank's writes visible; after nn_node_backward, no rank reads W
 * again this step, so each may update its ranges of the parameters. */
typedef struct nn_node_step {
  int part, parts;                  /* q, S */
  int by_units;                     /* the split above: 1 by units, 0 by rows */
  size_t rows;                      /* R: the node's rows, all its ranks' */
  size_t row0, B;                   /* this rank's rows: [row0, row0 + B) */
  float *a[NN_MAX_LAYERS + 1];      /* (R, n_l), shared */
  float *delta[NN_MAX_LAYERS + 1];  /* (R, n_l) for l >= 1, shared */
  size_t *row_ids;                  /* (R) global row ids, shared: the dropout keys */
  float *mask[NN_MAX_LAYERS + 1];   /* per hidden layer, this rank's own: (mask rows, n_l) */
  void (*sync)(void *ctx);
  void *ctx;
} nn_node_step;

/* Units [*j0, *j1) of n that part q of S computes (may be empty when n < S). */
void nn_part(int n, int q, int S, int *j0, int *j1);
/* The shared buffers for R rows (activations, deltas, row ids) take at most
 * R * nn_node_step_row_bytes + NN_NODE_STEP_SLACK bytes; this rank's masks
 * nn_node_step_mask_rows * mask_bytes (0 without dropout): R rows by units, B by rows. */
#define NN_NODE_STEP_SLACK ((size_t)64 * (2 * NN_MAX_LAYERS + 4))
size_t nn_node_step_row_bytes(const nn_model *m);
size_t nn_node_step_mask_bytes(const nn_model *m);
size_t nn_node_step_mask_rows(const nn_node_step *s);
/* Lay out the shared buffers for s->rows rows in shared (64-byte aligned) and this rank's masks
 * in masks (or NULL without dropout); s->by_units and s->B must be set. */
void nn_node_step_bind(nn_node_step *s, const nn_model *m, void *shared, float *masks);
/* Phases (the tests run them part by part). grad has the layout of params; grad_units writes
 * (does not add) this part's rows of dW^l and db^l. */
void nn_node_forward_layer(const nn_model *m, const nn_node_step *s, const float *params, int l);
double nn_node_output(const nn_model *m, const nn_node_step *s, const int32_t *labels,
                      const float *targets);
void nn_node_delta_layer(const nn_model *m, const nn_node_step *s, const float *params, int l);
void nn_node_grad_units(const nn_model *m, const nn_node_step *s, float *grad);
/* The phases with their syncs. This rank's input rows must be in s->a[0] (and their ids in
 * s->row_ids) on entry; nn_node_forward returns this rank's summed loss, and leaves a^L of its
 * rows at s->a[L] + row0 * n_L. Dropout is on when m->dropout > 0 and m->dropout_rows != NULL
 * (the keys are s->row_ids). */
double nn_node_forward(const nn_model *m, const nn_node_step *s, const float *params,
                       const int32_t *labels, const float *targets);
void nn_node_backward(const nn_model *m, const nn_node_step *s, const float *params, float *grad);

/* Number of rows of a[L] (B, n_L) whose argmax equals the label. */
size_t nn_count_correct(const float *a, const int32_t *labels, size_t B, int n);

/* confusion (n, n) row-major: confusion[label * n + argmax] += 1 for each of the B rows. */
void nn_confusion_add(double *confusion, const float *a, const int32_t *labels, size_t B, int n);

/* ---- kernels (exposed for the tests, which compare them with naive loops) ---- */

/* z (B, n_out) = a_prev (B, n_in) W^T + b; W (n_out, n_in), b (n_out). */
void nn_dense_forward(float *z, const float *a_prev, const float *W, const float *b, size_t B,
                      int n_in, int n_out);
/* dW (n_out, n_in) += delta^T a_prev; db (n_out) += column sums of delta (B, n_out);
 * delta_prev (B, n_in) = delta W, unless delta_prev is NULL. */
void nn_dense_backward(float *dW, float *db, float *delta_prev, const float *delta,
                       const float *a_prev, const float *W, size_t B, int n_in, int n_out);
/* In place: a = sigma(z) over (B, n); softmax is per row. */
void nn_activate(float *a, nn_act act, size_t B, int n);
/* Inverted dropout of a (B, n) in place: each unit is zeroed with probability p or scaled by
 * 1/(1-p); mask (B, n) records the factor. Row i draws from the stream nn_rng_key(key, rows[i]). */
void nn_dropout_forward(float *a, float *mask, float p, uint64_t key, const size_t *rows, size_t B, int n);
/* The same for the units [j0, j1) only, of rows with leading dimension ld: the masks are
 * those nn_dropout_forward draws for these units. */
void nn_dropout_forward_cols(float *a, float *mask, size_t ld, float p, uint64_t key, const size_t *rows,
                             size_t B, int j0, int j1);
/* delta *= mask * sigma'(z) where a holds the dropped activations a = sigma(z) * mask. */
void nn_dropout_backward(float *delta, const float *a, const float *mask, nn_act act, size_t count);
/* In place: delta *= sigma'(z), computed from a = sigma(z) (relu, sigmoid, tanh, linear). */
void nn_activate_backward(float *delta, const float *a, nn_act act, size_t count);
/* Output layer: on entry a holds z^L (B, n); on exit a = sigma(z^L). Returns the summed loss
 * (labels or targets given) computed stably from z. */
double nn_output_forward(float *a, nn_act act, nn_loss loss, const int32_t *labels,
                         const float *targets, size_t B, int n);
/* delta^L (B, n) = dC/dz^L per sample, from a^L and the labels or targets. */
void nn_output_delta(float *delta, const float *a, nn_act act, nn_loss loss,
                     const int32_t *labels, const float *targets, size_t B, int n);

#endif
