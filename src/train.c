/* The training loop. Per step: gather this rank's rows of the global batch, forward, backward
 * (summed gradient), one MPI_Allreduce(SUM) over the flat gradient, the same SGD update on
 * every rank. Per epoch: reduced metrics, evaluation on the test shard, a checkpoint, a check
 * that all ranks hold the same weights. */
#include "nnmpi/train.h"

#include <cblas.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "nnmpi/checkpoint.h"
#include "nnmpi/comm.h"
#include "nnmpi/data.h"
#include "nnmpi/model.h"
#include "nnmpi/optim.h"
#include "nnmpi/rng.h"
#include "nnmpi/shard.h"
#include "nnmpi/version.h"

#define EVAL_ROWS 512 /* rows per evaluation forward pass */
#define NN_PROBE_CALLS 5 /* gradient allreduces timed at start (blocking and overlap, 2+ ranks) */

/* Control slots appended to the gradient buffer, summed by the same allreduce: every rank
 * learns of a signal, or of rank 0's clock asking for a checkpoint, at the same step, at no
 * extra communication cost. */
enum { CTL_STOP, CTL_CHECKPOINT, CTL_DATA_ERROR, NN_CONTROL };

/* Names of the optimizer's state buffers in checkpoints (/optimizer/<name>/W1 ...). */
static const char *const *state_names_of(nn_optimizer kind) {
  static const char *const velocity[NN_MAX_STATE] = {"velocity", NULL};
  static const char *const moments[NN_MAX_STATE] = {"first_moment", "second_moment"};
  return kind == NN_OPT_ADAM || kind == NN_OPT_ADAMW ? moments : velocity;
}

volatile sig_atomic_t nn_stop_signal = 0;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Seconds spent per category in the current epoch. */
typedef struct timers {
  double compute, comm, io, io_wait, eval, ckpt; /* io_wait: part of io spent waiting on a stream */
  double forward, backward, update;              /* parts of compute */
} timers;

typedef struct trainer {
  const nn_config *cfg;
  const char *config_text;
  MPI_Comm comm;
  int rank, world;
  nn_shard shard;
  nn_dataset train, test;
  nn_stream *stream;               /* non-NULL when the shard is streamed ([data] memory_limit) */
  int stream_slots;
  nn_error data_err;               /* a streaming read failure, agreed at the step it happens */
  double load_s;                   /* reading (and checking) the training shards, slowest rank */
  double probe_s;                  /* the fastest of NN_PROBE_CALLS gradient allreduces at start,
                                      slowest rank (0: none, with one rank or shm); on one host the
                                      allreduce has slow periods, 4-5x slower (README) */
  int have_test;
  nn_model model;
  float *params, *grad;            /* one flat buffer each, same layout; but for shm, grad has
                                      NN_CONTROL extra slots after the gradient (see train_step) */
  float *ctl;                      /* the control slots: grad + n_params, or ctl_own with shm */
  float ctl_own[NN_CONTROL];
  float *state[NN_MAX_STATE];      /* optimizer buffers, same layout */
  int n_state;
  const char *const *state_names;
  nn_optim_params optim;           /* lr is set every step from the schedule */
  nn_grad_sync sync;               /* overlapped reduction state ([train] allreduce = overlap) */
  nn_shm shm;                      /* node-shared memory ([train] allreduce = shm): params,
                                      state and grad then point into it */
  nn_node_step node;               /* shm: the node-sliced step's buffers and this rank's part */
  float *node_masks;               /* shm with dropout: this rank's masks (its rows x hidden) */
  size_t range_lo[2 * NN_MAX_LAYERS], range_hi[2 * NN_MAX_LAYERS]; /* shm: gradient ranges */
  int n_ranges;                    /* this rank computes and updates */
  float *batch_x;                  /* where gather_batch puts this rank's input rows ... */
  size_t *batch_ids;               /* ... and their global row ids */
  nn_allreduce_mode mode;          /* the reduction in use (auto resolved); set in setup */
  nn_grad_hook hook;
  nn_schedule schedule;
  double lr;                       /* learning rate of the latest step */
  nn_ckpt_meta start;              /* where training resumes (zero for a fresh start) */
  double last_ckpt_time;
  double best_val_loss;            /* early stopping: the best validation loss so far */
  long best_epoch;                 /* ... and its epoch (0 = none yet) */
  size_t *order, *rows;            /* epoch visiting order, rows of the current step */
  size_t *row_ids;                 /* global row ids of the current step (keys of dropout) */
  size_t *chunk_scratch;           /* nn_shard_order's scratch */
  int32_t *batch_labels;           /* (local_batch) */
  float *batch_targets;            /* (local_batch, n_out) */
  FILE *metrics;
  timers t;
  double rss_base_mib;             /* peak resident memory when setup began: MPI, HDF5, OpenBLAS */
} trainer;

/* ---- set-up ---------------------------------------------------------------------------- */

static void init_params(float *params, const nn_layout *lay, nn_init init, uint64_t seed) {
  nn_rng r;
  nn_rng_init(&r, nn_rng_key(seed, 0x1417, 0));
  memset(params, 0, lay->n_params * sizeof(float));
  for (int l = 1; l <= lay->L; l++) {
    double n_in = lay->n[l - 1], n_out = lay->n[l];
    double sd = init == NN_INIT_HE ? sqrt(2.0 / n_in) : sqrt(2.0 / (n_in + n_out));
    float *W = params + lay->W_off[l];
    for (size_t i = 0; i < (size_t)lay->n[l] * (size_t)lay->n[l - 1]; i++) W[i] = (float)(sd * nn_rng_normal(&r));
  }
}

/* The data must fit the model: layers[0] = features, outputs = classes or targets. */
static int check_data_fits(const nn_config *cfg, const nn_data_info *in, const char *path, nn_error *e) {
  char at[256];
  int n_out = cfg->sizes[cfg->n_sizes - 1];
  nn_config_where(cfg, "model", "layers", at, sizeof at);
  if ((size_t)cfg->sizes[0] != in->n_features)
    return nn_fail(e, NN_ECONFIG, "%s: input size %d does not match %s, which has %zu features", at,
                   cfg->sizes[0], path, in->n_features);
  if (in->classification && in->classes > 0 && in->classes != n_out)
    return nn_fail(e, NN_ECONFIG, "%s: output size %d does not match the %ld classes of %s", at,
                   n_out, in->classes, path);
  if (!in->classification && in->n_targets != (size_t)n_out)
    return nn_fail(e, NN_ECONFIG, "%s: output size %d does not match the %zu regression targets "
                   "of %s", at, n_out, in->n_targets, path);
  if (!in->classification && cfg->output == NN_ACT_SOFTMAX) {
    nn_config_where(cfg, "model", "output", at, sizeof at);
    return nn_fail(e, NN_ECONFIG, "%s: %s holds float targets (regression); use output = linear "
                   "or sigmoid with loss = mse", at, path);
  }
  return 0;
}

/* The largest W^l of the model, in bytes. */
static size_t widest_layer_bytes(const nn_layout *lay) {
  size_t w = 0;
  for (int l = 1; l <= lay->L; l++) {
    size_t b = (size_t)lay->n[l] * (size_t)lay->n[l - 1] * sizeof(float);
    w = b > w ? b : w;
  }
  return w;
}

static void print_header(const trainer *T) {
  const nn_config *cfg = T->cfg;
  const nn_layout *lay = &T->model.lay;
  char *core = openblas_get_corename();
  printf("nnmpi %s: %d rank%s, OpenBLAS %s core, %d BLAS thread%s per rank\n", NN_VERSION_STRING,
         T->world, T->world > 1 ? "s" : "", core, openblas_get_num_threads(),
         openblas_get_num_threads() > 1 ? "s" : "");
#if defined(__x86_64__) && defined(__GNUC__)
  if (core && (strcmp(core, "Prescott") == 0 || strcmp(core, "Core2") == 0 || strcmp(core, "Nehalem") == 0)) {
    const char *fix = __builtin_cpu_supports("avx512f") ? "SKYLAKEX" : __builtin_cpu_supports("avx2") ? "HASWELL" : NULL;
    if (fix)
      printf("warning: OpenBLAS uses the generic %s kernels on a CPU with %s; export "
             "OPENBLAS_CORETYPE=%s for about 5x faster GEMMs\n", core, fix[0] == 'S' ? "AVX-512" : "AVX2", fix);
  }
#endif
  printf("---- effective configuration (%s) ----\n", cfg->path);
  nn_config_print(cfg, stdout);
  printf("----\n");
  const nn_data_info *in = &T->train.info;
  printf("train: %s: %zu samples x %zu features, %s\n", cfg->train, in->n_rows, in->n_features,
         in->classification ? "integer class labels" : "float targets");
  double mib = (double)in->n_rows * (double)(in->n_features + in->n_targets) * sizeof(float) / 1048576.0;
  printf("load:  %.1f MiB of training rows read and checked in %.2f s (%.0f MiB/s, slowest rank)%s\n",
         mib, T->load_s, mib / T->load_s, T->stream ? "; checked only: training streams them" : "");
  if (T->have_test)
    printf("test:  %s: %zu samples x %zu features\n", cfg->test, T->test.info.n_rows, T->test.info.n_features);
  const nn_shard *s = &T->shard;
  size_t dropped = in->n_rows - s->steps * (size_t)cfg->batch_size;
  printf("batches: global %ld = %d partitions x %zu rows; rank 0 holds %d partition%s (%zu rows, "
         "%zu per step); %zu steps per epoch, %zu rows left out per epoch%s\n",
         cfg->batch_size, s->P, s->rows_per_part_batch, s->p_count, s->p_count > 1 ? "s" : "",
         s->row_end - s->row_begin, s->local_batch, s->steps, dropped,
         s->P % T->world ? " (partitions not a multiple of ranks: uneven load)" : "");
  if (T->stream)
    printf("streaming: rank 0's shard (%zu MiB) exceeds [data] memory_limit; read-ahead of %d chunks "
           "of %zu rows per partition (%zu MiB) on a background thread\n",
           ((s->row_end - s->row_begin) * (in->n_features + in->n_targets) * sizeof(float)) >> 20,
           T->stream_slots, s->chunk_rows, nn_stream_bytes(s, in, T->stream_slots) >> 20);
  if (s->val_rows)
    printf("validation: %zu rows held out (the last %.3g of every partition), never trained on\n",
           s->val_rows, T->cfg->validation_fraction);
  if (T->mode == NN_ALLREDUCE_SHM)
    printf("gradient sum: shm: %d rank%s per node share one copy of the parameters, optimizer state "
           "and gradient, and compute the node's %zu rows together, split by %s%s; each rank computes "
           "1/%d of the gradient's rows%s\n",
           T->shm.node_size, T->shm.node_size > 1 ? "s" : "", T->shm.rows, T->node.by_units ? "units" : "rows",
           cfg->node_split != NN_SPLIT_AUTO ? ""
           : T->node.by_units ? " (auto: a layer's weights take 8 MiB or more)" : " (auto: every layer's weights take under 8 MiB)",
           T->shm.node_size, T->shm.nodes > 1 ? "; the gradient is summed across nodes with MPI_Allreduce" : "");
  else
    printf("gradient sum: %s%s\n", T->mode == NN_ALLREDUCE_OVERLAP ? "overlap: MPI_Iallreduce per slice during backprop"
           : "blocking: one MPI_Allreduce after backprop", cfg->allreduce != NN_ALLREDUCE_AUTO ? ""
           : widest_layer_bytes(lay) < NN_NODE_UNITS_BYTES ? " (auto: every layer's weights take under 8 MiB)"
           : !T->shm.equal ? " (auto: the nodes run different numbers of ranks, so shm is not possible)"
           : " (auto: one rank per node, nothing to share)");
  if (T->probe_s > 0) {
    double mb = (double)(lay->n_params + NN_CONTROL) * sizeof(float) / 1e6;
    printf("gradient allreduce at start: %.2f MB in %.3f ms (fastest of %d calls, slowest rank; %.1f GB/s)\n",
           mb, 1e3 * T->probe_s, NN_PROBE_CALLS, mb / T->probe_s * 1e-3);
  }
  printf("model: ");
  for (int l = 0; l <= lay->L; l++) printf("%s%d", l ? "-" : "", lay->n[l]);
  printf(", %zu parameters (%.2f MiB), %s hidden, %s output, %s loss\n", lay->n_params,
         (double)lay->n_params * sizeof(float) / 1048576.0, nn_act_name(cfg->activation),
         nn_act_name(cfg->output), nn_loss_name(cfg->loss));
  fflush(stdout);
}

/* The keys (one "section.key = value" a line) on which two key strings differ, for messages. */
static void differing_keys(const char *mine, const char *theirs, char *out, size_t n) {
  size_t used = 0;
  out[0] = '\0';
  for (const char *p = mine; *p && used < n;) {
    size_t len = strcspn(p, "\n");
    size_t name_len = strcspn(p, " ");
    const char *q = theirs, *found = NULL;
    for (; *q; q += strcspn(q, "\n") + (q[strcspn(q, "\n")] == '\n'))
      if (strncmp(q, p, name_len) == 0 && q[name_len] == ' ') found = q;
    if (!found || strncmp(found, p, len) != 0 || (found[len] != '\n' && found[len] != '\0')) {
      const char *theirs_value = found ? found + name_len + 3 : "(none)";
      used += (size_t)snprintf(out + used, n - used, "%s%.*s is %.*s in the checkpoint but %.*s here",
                               used ? "; " : "", (int)name_len, p, (int)strcspn(theirs_value, "\n"),
                               theirs_value, (int)(len - name_len - 3), p + name_len + 3);
    }
    p += len + (p[len] == '\n');
  }
}

/* Read one checkpoint for a resume and check that this run may continue it. Rank 0 only.
 * *refused is set when the file is valid but belongs to another model or batch sequence (as
 * opposed to unreadable), which a search for the newest usable checkpoint must not skip. */
static int resume_from(trainer *T, const char *path, int *refused, nn_error *e) {
  *refused = 0;
  const nn_config *cfg = T->cfg;
  nn_ckpt_meta *m = &T->start;
  /* attributes first: a valid checkpoint of another model is refused, not skipped as corrupt */
  if (nn_ckpt_read(path, NULL, NULL, 0, NULL, NULL, m, e)) return e->code;
  char mine[NN_KEYS_MAX], diff[1024];
  for (int which = 0; which < 2; which++) {
    nn_config_keys_string(cfg, which, mine, sizeof mine);
    differing_keys(mine, which == NN_KEYS_SHAPE ? m->shape_keys : m->trajectory_keys, diff, sizeof diff);
    if (diff[0]) {
      *refused = 1;
      return nn_fail(e, NN_ECKPT, "%s: cannot resume: %s (%s)", path, diff,
                     which == NN_KEYS_SHAPE ? "the model's shape must not change"
                                            : "these keys fix the sequence of batches");
    }
  }
  if (nn_ckpt_read(path, &T->model.lay, T->params, T->n_state, T->state, T->state_names, m, e)) return e->code;
  if (m->step != m->epoch * (long)T->shard.steps + m->step_in_epoch || m->step_in_epoch >= (long)T->shard.steps) {
    *refused = 1;
    return nn_fail(e, NN_ECKPT, "%s: cannot resume: step %ld (epoch %ld + %ld steps) does not fit "
                   "%zu steps per epoch here (did the training file change?)", path, m->step,
                   m->epoch, m->step_in_epoch, T->shard.steps);
  }
  printf("resume: from %s: %ld epochs + %ld steps done (global step %ld), written by %d rank%s\n",
         path, m->epoch, m->step_in_epoch, m->step, m->world_size, m->world_size > 1 ? "s" : "");
  return 0;
}

/* Rank 0: initial weights and position, from [checkpoint] resume, [model] init_from, or the
 * seeded initialisation. */
static int find_start(trainer *T, nn_error *e) {
  const nn_config *cfg = T->cfg;
  memset(&T->start, 0, sizeof T->start);
  if (strcmp(cfg->resume, "auto") == 0) {
    char(*paths)[NN_PATH_MAX];
    int n = nn_ckpt_list(cfg->ckpt_dir, &paths);
    if (n < 0) return nn_fail(e, NN_ECKPT, "%s: cannot list the checkpoint directory", cfg->ckpt_dir);
    for (int i = 0; i < n; i++) {
      nn_error tried = {0};
      int refused;
      if (resume_from(T, paths[i], &refused, &tried) == 0) {
        free(paths);
        return 0;
      }
      if (refused) { /* a valid checkpoint of another run: stop rather than start over */
        free(paths);
        *e = tried;
        return e->code;
      }
      printf("resume: skipping %s\n", tried.msg);
    }
    free(paths);
    printf("resume: no valid checkpoint in %s, starting fresh\n", cfg->ckpt_dir);
    memset(&T->start, 0, sizeof T->start);
  } else if (strcmp(cfg->resume, "never") != 0) {
    int refused;
    return resume_from(T, cfg->resume, &refused, e);
  }
  for (int i = 0; i < T->n_state; i++) memset(T->state[i], 0, T->model.lay.n_params * sizeof(float));
  if (cfg->init_from[0]) {
    nn_ckpt_meta meta;
    return nn_ckpt_read(cfg->init_from, &T->model.lay, T->params, 0, NULL, NULL, &meta, e);
  }
  init_params(T->params, &T->model.lay, cfg->init, cfg->seed);
  return 0;
}

/* Peak resident memory of this process so far, in MiB. */
static double peak_rss_mib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss / 1024.0; /* ru_maxrss is in KiB */
}

/* [train] node_split. By rows, each rank multiplies all of W^l by its own rows, with one sync a
 * step; by units, 1/S of W^l by all the node's rows, with 2L + 1 syncs. Measured on 2 ranks
 * (README, Measured results): by rows was faster on the 784-256-128-10 MLP (largest W 0.8 MB),
 * by units on the 1024-4096-4096-1024 one (64 MB): auto puts the line at NN_NODE_UNITS_BYTES. */
static int node_by_units(const trainer *T) {
  if (T->cfg->node_split != NN_SPLIT_AUTO) return T->cfg->node_split == NN_SPLIT_UNITS;
  return widest_layer_bytes(&T->model.lay) >= NN_NODE_UNITS_BYTES;
}

/* shm: point the parameters, state and gradient into the node's shared memory, lay out the
 * node's batch buffers, and list the gradient ranges this rank's part computes and updates:
 * rows [j0, j1) of every W^l, and the same entries of b^l. */
static int bind_node_step(trainer *T, nn_error *e) {
  nn_shm *sh = &T->shm;
  const nn_layout *lay = &T->model.lay;
  T->params = sh->params;
  T->grad = sh->grad;
  for (int i = 0; i < T->n_state; i++) T->state[i] = sh->state[i];
  T->ctl = T->ctl_own;
  T->node = (nn_node_step){.part = sh->node_rank, .parts = sh->node_size, .by_units = node_by_units(T),
                           .rows = sh->rows, .row0 = sh->row0, .B = T->shard.local_batch,
                           .sync = nn_shm_sync, .ctx = sh};
  size_t mask_rows = nn_node_step_mask_rows(&T->node), mask_bytes = nn_node_step_mask_bytes(&T->model);
  if (mask_bytes && !(T->node_masks = malloc(mask_rows * mask_bytes + 1))) /* +1: never malloc(0) */
    nn_fail(e, NN_ENOMEM, "cannot allocate the dropout masks of %zu rows", mask_rows);
  if (nn_comm_agree(e, T->comm)) return e->code;
  nn_node_step_bind(&T->node, &T->model, sh->batch, T->node_masks);
  T->batch_x = T->node.a[0] + sh->row0 * (size_t)lay->n[0];
  T->batch_ids = T->node.row_ids + sh->row0;
  T->n_ranges = 0;
  for (int l = 1; l <= lay->L; l++) {
    int j0, j1;
    nn_part(lay->n[l], sh->node_rank, sh->node_size, &j0, &j1);
    if (j1 == j0) continue;
    T->range_lo[T->n_ranges] = lay->W_off[l] + (size_t)j0 * (size_t)lay->n[l - 1];
    T->range_hi[T->n_ranges++] = lay->W_off[l] + (size_t)j1 * (size_t)lay->n[l - 1];
    T->range_lo[T->n_ranges] = lay->b_off[l] + (size_t)j0;
    T->range_hi[T->n_ranges++] = lay->b_off[l] + (size_t)j1;
  }
  return 0;
}

/* Everything that can fail before the first step, each failure agreed by all ranks. */
static int setup(trainer *T, nn_error *e) {
  const nn_config *cfg = T->cfg;
  nn_data_info info;
  T->rss_base_mib = peak_rss_mib();
  openblas_set_num_threads((int)cfg->blas_threads);

  nn_data_info_read(cfg->train, cfg->features, cfg->labels, &info, e);
  if (!e->code) check_data_fits(cfg, &info, cfg->train, e);
  if (!e->code && nn_shard_init(&T->shard, info.n_rows, (size_t)cfg->batch_size, (int)cfg->partitions,
                                T->rank, T->world, cfg->validation_fraction, (size_t)cfg->chunk_rows,
                                e) == NN_EDATA) {
    char msg[NN_ERRMSG_MAX]; /* name the file and dataset, as other data errors do */
    snprintf(msg, sizeof msg, "%.180s: dataset %.60s: %.240s", cfg->train, cfg->features, e->msg);
    snprintf(e->msg, sizeof e->msg, "%s", msg);
  }
  size_t shard_bytes = (T->shard.row_end - T->shard.row_begin) * (info.n_features + info.n_targets) * sizeof(float);
  if (!e->code && cfg->memory_limit > 0 && shard_bytes > (size_t)cfg->memory_limit) {
    char at[256];
    size_t one = nn_stream_bytes(&T->shard, &info, 1);
    T->stream_slots = (int)((size_t)cfg->memory_limit / one < 8 ? (size_t)cfg->memory_limit / one : 8);
    nn_config_where(cfg, "data", "memory_limit", at, sizeof at);
    if (T->stream_slots < 3)
      nn_fail(e, NN_ECONFIG, "%s: %lld bytes is too small: rank %d streams %d partitions of %zu MiB "
              "and needs 3 chunks of %ld rows each (%zu MiB); raise it or lower [data] chunk_rows",
              at, cfg->memory_limit, T->rank, T->shard.p_count, shard_bytes >> 20, cfg->chunk_rows,
              (3 * one) >> 20);
    else if (T->shard.val_rows)
      nn_fail(e, NN_ECONFIG, "%s: streaming cannot hold out validation rows yet; set "
              "[data] validation_fraction = 0 or raise memory_limit", at);
  }
  if (nn_comm_agree(e, T->comm)) return e->code;
  long n_classes = info.classification ? cfg->sizes[cfg->n_sizes - 1] : 0;
  /* a streamed shard is read once here to check it, in bounded memory, then read again by chunks */
  double t_load = now();
  if (nn_data_load(&T->train, cfg->train, cfg->features, cfg->labels, T->shard.row_begin,
                   T->shard.row_end, n_classes, T->stream_slots > 0, cfg->reader == NN_READER_POSIX,
                   T->comm, e))
    return e->code;
  T->load_s = now() - t_load;
  MPI_Allreduce(MPI_IN_PLACE, &T->load_s, 1, MPI_DOUBLE, MPI_MAX, T->comm);
  if (T->stream_slots > 0)
    nn_stream_open(&T->stream, cfg->train, cfg->features, cfg->labels, &T->shard, &T->train.info,
                   T->stream_slots, e);
  if (nn_comm_agree(e, T->comm)) return e->code;

  T->have_test = cfg->test[0] != '\0';
  if (T->have_test) {
    nn_data_info_read(cfg->test, cfg->features, cfg->labels, &info, e);
    if (!e->code) check_data_fits(cfg, &info, cfg->test, e);
    if (!e->code && info.classification != T->train.info.classification)
      nn_fail(e, NN_EDATA, "%s: labels are %s but the training labels are not", cfg->test,
              info.classification ? "class ids" : "float targets");
    if (nn_comm_agree(e, T->comm)) return e->code;
    size_t b, end;
    nn_split_rows(info.n_rows, T->rank, T->world, &b, &end);
    if (nn_data_load(&T->test, cfg->test, cfg->features, cfg->labels, b, end, n_classes, 0,
                     cfg->reader == NN_READER_POSIX, T->comm, e))
      return e->code;
  }

  nn_layout lay;
  size_t n_out = (size_t)cfg->sizes[cfg->n_sizes - 1], B = T->shard.local_batch;
  if (nn_layout_init(&lay, cfg->sizes, cfg->n_sizes, e) == 0 &&
      nn_model_init(&T->model, &lay, cfg->activation, cfg->output, cfg->loss, (float)cfg->dropout,
                    B > EVAL_ROWS ? B : EVAL_ROWS, e) == 0) {
    T->optim = (nn_optim_params){.kind = cfg->optimizer, .momentum = (float)cfg->momentum,
                                 .beta1 = (float)cfg->beta1, .beta2 = (float)cfg->beta2,
                                 .eps = (float)cfg->eps, .weight_decay = (float)cfg->weight_decay};
    T->n_state = nn_optim_state_count(&T->optim);
    T->state_names = state_names_of(cfg->optimizer);
    double steps = (double)T->shard.steps;
    T->schedule = (nn_schedule){
        .kind = cfg->lr_schedule,
        .base_lr = cfg->learning_rate * (cfg->scale_lr_with_batch ? (double)cfg->batch_size / (double)cfg->base_batch : 1.0),
        .warmup_steps = cfg->warmup_epochs * steps, .total_steps = (double)cfg->epochs * steps,
        .step_every = cfg->lr_step_epochs * steps, .gamma = cfg->lr_gamma, .min_lr = cfg->min_lr};
    T->order = malloc((T->shard.row_end - T->shard.row_begin) * sizeof(size_t));
    T->rows = malloc(B * sizeof(size_t));
    T->row_ids = malloc(B * sizeof(size_t));
    T->chunk_scratch = malloc((nn_shard_max_chunks(&T->shard) + 1) * sizeof(size_t));
    T->batch_labels = malloc(B * sizeof(int32_t));
    T->batch_targets = malloc(B * n_out * sizeof(float));
    if (!T->order || !T->rows || !T->row_ids || !T->chunk_scratch || !T->batch_labels || !T->batch_targets)
      nn_fail(e, NN_ENOMEM, "cannot allocate the batch buffers (%zu rows)", B);
  }
  if (nn_comm_agree(e, T->comm)) return e->code;

  /* Parameters, gradient and optimizer state: node-shared (shm) or this rank's own. auto picks
   * shm, split by units, when some layer's weights take NN_NODE_UNITS_BYTES or more and the
   * nodes run 2 ranks or more each (nn_shm_init decides), else blocking. Measured at -np 2
   * (README, Measured results): shm by units +14 to 19% on the 100 MB model; on the 0.9 MB one
   * blocking was 8% faster than shm by rows at batch 128 and 17% at batch 512 (AVX2 VM); with
   * 1 rank there is nothing to share. */
  size_t n = T->model.lay.n_params;
  T->mode = cfg->allreduce != NN_ALLREDUCE_AUTO ? (nn_allreduce_mode)cfg->allreduce
          : widest_layer_bytes(&T->model.lay) >= NN_NODE_UNITS_BYTES ? NN_ALLREDUCE_SHM
          : NN_ALLREDUCE_BLOCKING;
  if (T->mode == NN_ALLREDUCE_SHM) {
    nn_shm_fake_node_ranks = (int)cfg->shm_node_ranks;
    if (nn_shm_init(&T->shm, T->comm, n, NN_CONTROL, T->n_state, B, nn_node_step_row_bytes(&T->model),
                    NN_NODE_STEP_SLACK, cfg->allreduce == NN_ALLREDUCE_SHM, e))
      return e->code;
    if (T->shm.live) {
      if (bind_node_step(T, e)) return e->code;
    } else { /* auto, and one rank per node, or nodes with different numbers of ranks */
      T->mode = NN_ALLREDUCE_BLOCKING;
    }
  }
  if (T->mode != NN_ALLREDUCE_SHM) {
    T->params = malloc(n * sizeof(float));
    T->grad = malloc((n + NN_CONTROL) * sizeof(float));
    int ok = T->params && T->grad;
    for (int i = 0; i < T->n_state; i++) ok &= (T->state[i] = calloc(n, sizeof(float))) != NULL;
    if (!ok) nn_fail(e, NN_ENOMEM, "cannot allocate the model's buffers (%zu parameters)", n);
    if (nn_comm_agree(e, T->comm)) return e->code;
    T->ctl = T->grad + n;
    T->batch_x = T->model.a[0];
    T->batch_ids = T->row_ids;
    /* what one step's reduction costs at start, printed in the header; every step
     * zeroes the gradient before backprop; zeros here, as malloc's garbage may be denormal */
    if (T->world > 1) {
      memset(T->grad, 0, (n + NN_CONTROL) * sizeof(float));
      if (nn_comm_time_allreduce(T->grad, n + NN_CONTROL, NN_PROBE_CALLS, T->comm, &T->probe_s, e))
        return e->code;
    }
  }
  T->sync = (nn_grad_sync){.comm = T->comm, .grad = T->grad, .n_params = T->model.lay.n_params,
                           .extra = NN_CONTROL};
  T->hook = (nn_grad_hook){.ready = nn_grad_sync_ready, .ctx = &T->sync, .max_blocks = 4};

  if (T->rank == 0) {
    nn_ckpt_prepare_dir(cfg->ckpt_dir, e);
    if (!e->code) find_start(T, e);
    if (!e->code && cfg->metrics[0] && !(T->metrics = fopen(cfg->metrics, T->start.step ? "a" : "w")))
      nn_fail(e, NN_EIO, "%s: cannot open the metrics log for writing", cfg->metrics);
  }
  if (nn_comm_agree(e, T->comm)) return e->code;
  for (int i = -1; i < T->n_state; i++) { /* the parameters, then each optimizer buffer */
    float *buf = i < 0 ? T->params : T->state[i];
    if (T->mode == NN_ALLREDUCE_SHM ? nn_shm_bcast(&T->shm, buf, T->model.lay.n_params, e)
                   : nn_comm_bcast_floats(buf, T->model.lay.n_params, 0, T->comm, e))
      return nn_comm_agree(e, T->comm);
  }
  MPI_Bcast(&T->start, (int)sizeof T->start, MPI_BYTE, 0, T->comm);
  /* test hook: a full disk for the checkpoints, as the kernel reports it (EFBIG); set last, as
   * Open MPI's shared-memory windows are files too */
  if (cfg->file_size_limit > 0) {
    struct rlimit rl = {(rlim_t)cfg->file_size_limit, (rlim_t)cfg->file_size_limit};
    setrlimit(RLIMIT_FSIZE, &rl);
  }
  if (T->rank == 0) print_header(T);
  return 0;
}

static void teardown(trainer *T) {
  nn_stream_close(T->stream);
  nn_data_free(&T->train);
  nn_data_free(&T->test);
  nn_model_free(&T->model);
  if (T->mode == NN_ALLREDUCE_SHM) {
    nn_shm_free(&T->shm);
    free(T->node_masks);
  } else { /* blocking or overlap, also after an auto that fell back (shm then freed itself) */
    free(T->params);
    free(T->grad);
    for (int i = 0; i < T->n_state; i++) free(T->state[i]);
  }
  free(T->order);
  free(T->rows);
  free(T->row_ids);
  free(T->chunk_scratch);
  free(T->batch_labels);
  free(T->batch_targets);
  if (T->metrics) fclose(T->metrics);
}

/* ---- the step ---------------------------------------------------------------------------- */

/* Copy this rank's rows of global batch k into the model's input and the label buffers. */
static int gather_batch(trainer *T, size_t k) {
  const nn_dataset *d = &T->train;
  if (T->stream) {
    return nn_stream_batch(T->stream, k, T->batch_x, d->info.classification ? T->batch_labels : NULL,
                           T->batch_targets, T->batch_ids, &T->t.io_wait, &T->data_err);
  }
  size_t F = d->info.n_features, n_out = (size_t)T->model.lay.n[T->model.lay.L];
  nn_shard_batch_rows(T->rows, &T->shard, T->order, k);
  for (size_t i = 0; i < T->shard.local_batch; i++) {
    size_t r = T->rows[i];
    T->batch_ids[i] = d->row_begin + r;
    memcpy(T->batch_x + i * F, d->X + r * F, F * sizeof(float));
    if (d->labels) T->batch_labels[i] = d->labels[r];
    else memcpy(T->batch_targets + i * n_out, d->targets + r * n_out, n_out * sizeof(float));
  }
  return 0;
}

/* One global step; adds this rank's summed loss and correct count to sums[0..1]. The control
 * slots (T->ctl) carry this rank's stop request and (rank 0) a checkpoint request; they are
 * summed with the gradient (after it, in one allreduce) or with shm's verdicts, so every rank
 * holds their sums and takes the same decision. */
/* Some rank could not read its batch rows (T->ctl[CTL_DATA_ERROR] > 0 on every rank): all stop. */
static int data_error(trainer *T, nn_error *e) {
  *e = T->data_err;
  return nn_comm_agree(e, T->comm);
}

static int train_step(trainer *T, size_t k, long step, double *sums, nn_error *e) {
  const nn_config *cfg = T->cfg;
  nn_model *m = &T->model;
  size_t B = T->shard.local_batch, n = m->lay.n_params;
  int32_t *labels = T->train.info.classification ? T->batch_labels : NULL;
  float *targets = T->train.info.classification ? NULL : T->batch_targets;
  int overlap = T->mode == NN_ALLREDUCE_OVERLAP, shm = T->mode == NN_ALLREDUCE_SHM;
  int L = m->lay.L, n_out = m->lay.n[L];

  double t0 = now();
  int gathered = gather_batch(T, k) == 0;
  double t1 = now();
  if (!shm) memset(T->grad, 0, n * sizeof(float)); /* shm writes its ranges whole */
  /* the control slots ride with the first slice reduced (the last layer's), so set them first */
  T->ctl[CTL_DATA_ERROR] = gathered ? 0.0f : 1.0f;
  if (step == cfg->signal_at_step && T->rank == cfg->signal_rank) raise(SIGUSR1); /* test hook */
  T->ctl[CTL_STOP] = nn_stop_signal ? 1.0f : 0.0f;
  T->ctl[CTL_CHECKPOINT] = T->rank == 0 && cfg->ckpt_every_seconds > 0 &&
                           t1 - T->last_ckpt_time >= cfg->ckpt_every_seconds;
  m->dropout_rows = T->batch_ids;
  m->dropout_key = nn_rng_key(cfg->seed, (uint64_t)step, 0xd120u);
  double t_fwd = t1, t_bwd = t1;
  if (shm) { /* the node computes as one: every rank takes part, whatever it read */
    if (!gathered) { /* rows the others will multiply: defined values; all stop after the step */
      memset(T->batch_x, 0, B * (size_t)m->lay.n[0] * sizeof(float));
      if (labels) memset(labels, 0, B * sizeof *labels);
      else memset(targets, 0, B * (size_t)n_out * sizeof *targets);
    }
    sums[0] += nn_node_forward(m, &T->node, T->params, labels, targets);
    if (labels) sums[1] += (double)nn_count_correct(T->node.a[L] + T->node.row0 * (size_t)n_out, labels, B, n_out);
    t_fwd = now();
    nn_node_backward(m, &T->node, T->params, T->grad);
    t_bwd = now();
  } else if (gathered) {
    sums[0] += nn_model_forward(m, T->params, B, labels, targets);
    if (labels) sums[1] += (double)nn_count_correct(m->a[L], labels, B, n_out);
    t_fwd = now();
    nn_model_backward(m, T->params, T->grad, B, labels, targets, overlap ? &T->hook : NULL);
    t_bwd = now();
  } else if (overlap) { /* nothing to compute: post the same slices all the same */
    nn_model_zero_slices(&m->lay, &T->hook);
  }
  double t2 = now();
  double sumsq = 0.0;
  int clipping = cfg->clip_norm > 0;
  if (shm) { /* sums this rank's ranges across nodes; the verdicts are shared after the update */
    if (nn_shm_reduce(&T->shm, T->range_lo, T->range_hi, T->n_ranges, T->ctl, clipping ? &sumsq : NULL, e))
      return e->code;
  } else if (overlap ? nn_grad_sync_wait(&T->sync, e)
                     : nn_comm_allreduce_sum(T->grad, n + NN_CONTROL, T->comm, e)) {
    return e->code;
  }
  double t3 = now();
  if (!shm && T->ctl[CTL_DATA_ERROR] > 0) /* some rank could not read its rows: all stop here */
    return data_error(T, e);
  /* Every rank holds the same reduced gradient (with shm: its ranges of it), so every rank
   * takes the same decisions. It updates its ranges: all of the parameters, or with shm its
   * ranges of the node's shared copy, and checks them for NaN and Inf in the same pass. */
  size_t whole_lo = 0, whole_hi = n;
  const size_t *lo = shm ? T->range_lo : &whole_lo, *hi = shm ? T->range_hi : &whole_hi;
  int n_ranges = shm ? T->n_ranges : 1;
  float scale = 1.0f / (float)cfg->batch_size; /* summed gradient -> mean */
  if (clipping) { /* the same reduced gradient everywhere: the same factor everywhere */
    if (!shm) sumsq = nn_sumsq(T->grad, n);
    scale *= nn_clip_factor(sumsq, scale, (float)cfg->clip_norm);
  }
  T->lr = nn_schedule_lr(&T->schedule, step - 1);
  T->optim.lr = (float)T->lr;
  int finite = 1;
  for (int i = 0; i < n_ranges; i++) {
    size_t at = lo[i], count = hi[i] - lo[i];
    finite &= nn_optim_step(T->params + at, T->state[0] ? T->state[0] + at : NULL,
                            T->state[1] ? T->state[1] + at : NULL, T->grad + at, count, &T->optim,
                            step, scale);
  }
  if (shm) { /* the node's parameters are whole again; the node's verdicts and requests shared */
    finite = nn_shm_fence(&T->shm, T->ctl, finite);
    if (T->ctl[CTL_DATA_ERROR] > 0) return data_error(T, e);
  }
  /* On either failure the parameters in memory are not used again: the run stops, and the
   * checkpoints already written are those of earlier steps. */
  if (!finite)
    return nn_fail(e, NN_ENUMERIC, "step %ld: the gradient or the updated parameters hold NaN or "
                   "Inf (learning rate too high, or bad input values?); stopped, earlier checkpoints "
                   "are kept", step);
  double t4 = now();
  T->t.io += t1 - t0;
  T->t.compute += (t2 - t1) + (t4 - t3);
  T->t.comm += t3 - t2; /* with overlap: only the part left after backprop */
  T->t.forward += t_fwd - t1;
  T->t.backward += t_bwd - t_fwd;
  T->t.update += t4 - t3;
  return 0;
}

/* Evaluate rows [begin, end) of a dataset (local indices) in place, adding the loss sum and the
 * correct count to out[0..1], and labels x predictions to confusion (C x C) when non-NULL. */
static void evaluate_rows(trainer *T, const nn_dataset *d, size_t begin, size_t end, double *out,
                          double *confusion) {
  nn_model *m = &T->model;
  size_t F = d->info.n_features, n_out = (size_t)m->lay.n[m->lay.L];
  for (size_t r = begin; r < end; r += m->batch_cap) {
    size_t B = end - r < m->batch_cap ? end - r : m->batch_cap;
    m->a[0] = d->X + r * F; /* evaluation reads the shard in place */
    const int32_t *labels = d->labels ? d->labels + r : NULL;
    out[0] += nn_model_forward(m, T->params, B, labels, d->targets ? d->targets + r * n_out : NULL);
    if (labels) out[1] += (double)nn_count_correct(m->a[m->lay.L], labels, B, (int)n_out);
    if (labels && confusion) nn_confusion_add(confusion, m->a[m->lay.L], labels, B, (int)n_out);
  }
}

/* Loss sum, correct count and sample count over the test set (which = 0) or the validation
 * rows (which = 1), each row exactly once whatever the number of ranks, reduced over ranks.
 * With confusion non-NULL, also the reduced confusion matrix (C x C doubles). Collective. */
static int evaluate(trainer *T, int which, double out[3], double *confusion, nn_error *e) {
  nn_model *m = &T->model;
  float *input = m->a[0];
  size_t C = (size_t)m->lay.n[m->lay.L];
  m->dropout_rows = NULL; /* no dropout at evaluation */
  out[0] = out[1] = out[2] = 0.0;
  if (confusion) memset(confusion, 0, C * C * sizeof *confusion);
  if (which == 0) {
    evaluate_rows(T, &T->test, 0, T->test.n_local, out, confusion);
    out[2] = (double)T->test.n_local;
  } else {
    for (int j = 0; j < T->shard.p_count; j++) { /* the held-out tail of each own partition */
      int p = T->shard.p_first + j;
      size_t b = nn_partition_val_begin(&T->shard, p) - T->shard.row_begin;
      size_t end = nn_partition_begin(T->shard.n_rows, T->shard.P, p + 1) - T->shard.row_begin;
      evaluate_rows(T, &T->train, b, end, out, confusion);
      out[2] += (double)(end - b);
    }
  }
  m->a[0] = input;
  if (nn_comm_sum_doubles(out, 3, T->comm, e)) return e->code;
  return confusion ? nn_comm_sum_doubles(confusion, (int)(C * C), T->comm, e) : 0;
}

/* Rank 0 writes; the outcome is agreed so that a full disk stops every rank together. The
 * epoch sums are reduced first so that a resumed run reports the whole epoch. */
static int write_checkpoint_to(trainer *T, const char *path, long epochs_done, long in_epoch,
                               long step, const double *sums, nn_error *e) {
  double total[3] = {sums[0], sums[1], (double)in_epoch * (double)T->cfg->batch_size};
  if (nn_comm_sum_doubles(total, 2, T->comm, e)) return e->code;
  if (T->rank == 0) {
    nn_ckpt_meta meta = {.epoch = epochs_done, .step_in_epoch = in_epoch, .step = step,
                         .world_size = T->world, .epoch_sums = {total[0], total[1], total[2]},
                         .best_val_loss = T->best_val_loss, .best_epoch = T->best_epoch};
    const float *const *state = (const float *const *)T->state;
    nn_hdf5_lock(); /* the streaming thread may be reading */
    if (nn_ckpt_write(path, T->cfg, T->config_text, &T->model.lay, T->params, T->n_state, state,
                      T->state_names, &meta, e) == 0)
      nn_ckpt_prune(T->cfg->ckpt_dir, T->cfg->ckpt_keep);
    nn_hdf5_unlock();
  }
  T->last_ckpt_time = now();
  return nn_comm_agree(e, T->comm);
}

/* The regular checkpoint, named by nn_ckpt_path (its name is returned in path). */
static int write_checkpoint(trainer *T, long epochs_done, long in_epoch, long step,
                            const double *sums, char *path, size_t path_len, nn_error *e) {
  nn_ckpt_path(path, path_len, T->cfg->ckpt_dir, epochs_done, step);
  return write_checkpoint_to(T, path, epochs_done, in_epoch, step, sums, e);
}

static void json_number(FILE *f, const char *key, double v) {
  if (isfinite(v)) fprintf(f, ",\"%s\":%.9g", key, v);
  else fprintf(f, ",\"%s\":null", key);
}

enum { PH_FORWARD, PH_BACKWARD, PH_COMM, PH_UPDATE, PH_IO, N_PHASES };
static const char *const allreduce_names[] = {"blocking", "overlap", "shm"};
static const char *const phase_names[N_PHASES] = {"forward", "backward", "allreduce_wait", "update", "io"};

typedef struct epoch_report {
  long epoch, step, steps;
  double train_s;                          /* the training part of the epoch (samples_per_s) */
  double phase_max[N_PHASES], phase_min[N_PHASES]; /* per-phase seconds, max and min over ranks */
  double train_loss, train_acc, val_loss, val_acc, test_loss, test_acc, samples_per_s, time_s, lr;
  timers t;
} epoch_report;

static void report_epoch(const trainer *T, const epoch_report *r) {
  printf("epoch %3ld/%ld  step %6ld  train_loss %.4f", r->epoch, T->cfg->epochs, r->step, r->train_loss);
  if (isfinite(r->train_acc)) printf("  train_acc %6.2f%%", 100.0 * r->train_acc);
  if (T->shard.val_rows) printf("  val_loss %.4f", r->val_loss);
  if (isfinite(r->val_acc)) printf("  val_acc %6.2f%%", 100.0 * r->val_acc);
  if (T->have_test) printf("  test_loss %.4f", r->test_loss);
  if (isfinite(r->test_acc)) printf("  test_acc %6.2f%%", 100.0 * r->test_acc);
  printf("  lr %.3g  | %.0f samples/s  %.2fs: compute %.2f comm %.2f io %.2f", r->lr, r->samples_per_s,
         r->time_s, r->t.compute, r->t.comm, r->t.io);
  if (T->stream) printf(" (waiting %.2f)", r->t.io_wait);
  printf(" eval %.2f ckpt %.2f\n", r->t.eval, r->t.ckpt);
  fflush(stdout);
  if (!T->metrics) return;
  FILE *f = T->metrics;
  fprintf(f, "{\"epoch\":%ld,\"step\":%ld", r->epoch, r->step);
  json_number(f, "train_loss", r->train_loss);
  json_number(f, "train_accuracy", r->train_acc);
  json_number(f, "val_loss", r->val_loss);
  json_number(f, "val_accuracy", r->val_acc);
  json_number(f, "test_loss", r->test_loss);
  json_number(f, "test_accuracy", r->test_acc);
  json_number(f, "lr", r->lr);
  json_number(f, "samples_per_s", r->samples_per_s);
  json_number(f, "time_s", r->time_s);
  json_number(f, "time_compute_s", r->t.compute);
  json_number(f, "time_comm_s", r->t.comm);
  json_number(f, "time_io_s", r->t.io);
  json_number(f, "time_io_wait_s", r->t.io_wait);
  json_number(f, "time_eval_s", r->t.eval);
  json_number(f, "time_checkpoint_s", r->t.ckpt);
  json_number(f, "time_train_s", r->train_s);
  for (int i = 0; i < N_PHASES; i++) {
    char key[64];
    snprintf(key, sizeof key, "time_%s_s_max", phase_names[i]);
    json_number(f, key, r->phase_max[i]);
    snprintf(key, sizeof key, "time_%s_s_min", phase_names[i]);
    json_number(f, key, r->phase_min[i]);
  }
  fprintf(f, ",\"steps\":%ld,\"global_batch\":%ld,\"ranks\":%d,\"allreduce\":\"%s\"}\n", r->steps,
          T->cfg->batch_size, T->world, allreduce_names[T->mode]);
  fflush(f);
}

/* After training: confusion matrix and per-class accuracy on the test set (or the validation
 * rows when there is no test set), printed and written to the metrics log. Collective. */
static int final_report(trainer *T, nn_error *e) {
  size_t C = (size_t)T->model.lay.n[T->model.lay.L];
  double ev[3], *conf = calloc(C * C, sizeof *conf);
  if (!conf) return nn_fail(e, NN_ENOMEM, "out of memory for a %zu x %zu confusion matrix", C, C);
  const char *set = T->have_test ? "test" : "validation";
  if (evaluate(T, T->have_test ? 0 : 1, ev, conf, e) == 0 && T->rank == 0) {
    printf("final %s accuracy %.2f%% over %.0f samples; per class (rows: label, columns: predicted):\n",
           set, 100.0 * ev[1] / ev[2], ev[2]);
    for (size_t i = 0; i < C && C <= 32; i++) {
      double row = 0;
      for (size_t j = 0; j < C; j++) row += conf[i * C + j];
      printf("  class %3zu: %6.2f%% |", i, row > 0 ? 100.0 * conf[i * C + i] / row : 0.0);
      for (size_t j = 0; j < C; j++) printf(" %5.0f", conf[i * C + j]);
      printf("\n");
    }
    if (T->metrics) {
      fprintf(T->metrics, "{\"final\":true,\"set\":\"%s\",\"accuracy\":%.9g,\"per_class_accuracy\":[", set, ev[1] / ev[2]);
      for (size_t i = 0; i < C; i++) {
        double row = 0;
        for (size_t j = 0; j < C; j++) row += conf[i * C + j];
        fprintf(T->metrics, "%s%.6g", i ? "," : "", row > 0 ? conf[i * C + i] / row : 0.0);
      }
      fprintf(T->metrics, "],\"confusion_matrix\":[");
      for (size_t i = 0; i < C; i++) {
        fprintf(T->metrics, "%s[", i ? "," : "");
        for (size_t j = 0; j < C; j++) fprintf(T->metrics, "%s%.0f", j ? "," : "", conf[i * C + j]);
        fprintf(T->metrics, "]");
      }
      fprintf(T->metrics, "]}\n");
      fflush(T->metrics);
    }
  }
  free(conf);
  return e->code;
}

/* Peak resident memory against what the buffers account for: the shard (or the stream's
 * chunks), the test shard, parameters + gradient + optimizer state, activations (with deltas
 * and dropout masks), and on rank 0 the checkpoint image and its copy. The runtime's own
 * memory (MPI, HDF5, OpenBLAS, the program itself), measured as the peak when setup began, is
 * reported apart. Rank 0's figures are shown:
 * it holds the checkpoint image, so it is the largest rank unless its shard is much smaller. */
static void report_memory(const trainer *T) {
  double peak = peak_rss_mib(), most = peak, least = peak;
  MPI_Reduce(&peak, &most, 1, MPI_DOUBLE, MPI_MAX, 0, T->comm);
  MPI_Reduce(&peak, &least, 1, MPI_DOUBLE, MPI_MIN, 0, T->comm);
  if (T->rank != 0) return;
  const nn_layout *lay = &T->model.lay;
  const nn_data_info *in = &T->train.info;
  size_t row = (in->n_features + in->n_targets) * sizeof(float);
  const double MiB = 1048576.0;
  double shard = (T->stream ? (double)nn_stream_bytes(&T->shard, in, T->stream_slots)
                            : (double)(T->shard.row_end - T->shard.row_begin) * (double)row) / MiB;
  double test = (double)T->test.n_local * (double)row / MiB;
  /* parameters, gradient, optimizer state, activations (with deltas and dropout masks). With
   * shm: one copy per node of the parameters (every rank reads all of W), of the state (rank 0
   * reads all of it to write checkpoints) and of the gradient (rank 0 writes its ranges, 1/S);
   * the node's batch buffers (all read) and this rank's masks; and of the model's own buffers
   * only the activations, and only if something is evaluated */
  const nn_model *m = &T->model;
  double copies = 2.0 + T->n_state, acts = (double)m->buffer_bytes;
  if (T->mode == NN_ALLREDUCE_SHM) {
    copies = 1.0 + T->n_state + 1.0 / T->shm.node_size;
    size_t eval_floats = (size_t)(m->a[lay->L] - m->a[0]) + m->batch_cap * (size_t)lay->n[lay->L];
    acts = (double)T->shm.rows * (double)nn_node_step_row_bytes(m) +
           (double)nn_node_step_mask_rows(&T->node) * (double)nn_node_step_mask_bytes(m) +
           (T->have_test || T->shard.val_rows ? (double)eval_floats * sizeof(float) : 0.0);
  }
  double params = (double)lay->n_params * sizeof(float) * copies / MiB;
  acts /= MiB;
  double ckpt = 2.0 * (double)nn_ckpt_image_estimate(lay, T->n_state) / MiB;
  double buffers = shard + test + params + acts + ckpt, used = peak - T->rss_base_mib;
  printf("memory: rank 0 peak resident %.0f MiB = runtime %.0f (MPI, HDF5, OpenBLAS at start) + "
         "%.0f; buffers %.0f MiB = shard %.0f + test %.0f + parameters, gradient and optimizer state "
         "%.0f + activations %.0f + checkpoint image %.0f; %.0f/%.0f = %.2f. All ranks: peak %.0f to "
         "%.0f MiB\n", peak, T->rss_base_mib, used, buffers, shard, test, params, acts, ckpt, used,
         buffers, used / buffers, least, most);
  if (T->metrics) {
    fprintf(T->metrics, "{\"memory\":true,\"peak_rss_mib_max\":%.1f,\"peak_rss_mib_min\":%.1f,"
            "\"rank0_peak_rss_mib\":%.1f,\"rank0_runtime_mib\":%.1f,\"rank0_buffers_mib\":%.1f,"
            "\"buffers_mib\":%.1f}\n", most, least, peak, T->rss_base_mib, buffers, buffers);
    fflush(T->metrics);
  }
}

static int run_epochs(trainer *T, nn_error *e) {
  const nn_config *cfg = T->cfg;
  long step = T->start.step;
  char path[NN_PATH_MAX + 64] = "";
  T->last_ckpt_time = now();
  T->best_val_loss = T->start.best_epoch ? T->start.best_val_loss : INFINITY;
  T->best_epoch = T->start.best_epoch;
  if (T->start.epoch >= cfg->epochs && T->rank == 0)
    printf("nothing to do: the checkpoint has %ld epochs done, [train] epochs = %ld\n", T->start.epoch, cfg->epochs);
  for (long epoch = T->start.epoch + 1; epoch <= cfg->epochs; epoch++) {
    double t_start = now();
    memset(&T->t, 0, sizeof T->t);
    nn_shard_order(T->order, T->chunk_scratch, &T->shard, cfg->seed, epoch, cfg->shuffle);
    if (T->stream) nn_stream_begin(T->stream, T->order, epoch == T->start.epoch + 1 ? (size_t)T->start.step_in_epoch : 0);
    double sums[2] = {0, 0}, interval[2] = {0, 0}; /* loss, correct */
    size_t k0 = 0;
    if (epoch == T->start.epoch + 1) { /* resumed inside this epoch: its sums so far, on rank 0 */
      k0 = (size_t)T->start.step_in_epoch;
      if (T->rank == 0) sums[0] = T->start.epoch_sums[0], sums[1] = T->start.epoch_sums[1];
    }
    for (size_t k = k0; k < T->shard.steps; k++) {
      double before = sums[0];
      if (train_step(T, k, ++step, sums, e)) return e->code;
      interval[0] += sums[0] - before;
      interval[1] += (double)T->shard.local_batch;
      if (cfg->log_every_steps > 0 && step % cfg->log_every_steps == 0) {
        if (nn_comm_sum_doubles(interval, 2, T->comm, e)) return e->code;
        if (T->rank == 0)
          printf("  step %ld (%zu/%zu of epoch %ld)  loss %.4f\n", step, k + 1, T->shard.steps,
                 epoch, interval[0] / interval[1]);
        interval[0] = interval[1] = 0;
      }
      int stop = T->ctl[CTL_STOP] > 0;
      int want = stop || T->ctl[CTL_CHECKPOINT] > 0 ||
                 (cfg->ckpt_every_steps > 0 && step % cfg->ckpt_every_steps == 0);
      if (want && k + 1 < T->shard.steps) { /* mid-epoch; at the epoch's end see below */
        double t0 = now();
        if (write_checkpoint(T, epoch - 1, (long)k + 1, step, sums, path, sizeof path, e)) return e->code;
        T->t.ckpt += now() - t0;
      }
      if (stop && k + 1 < T->shard.steps)
        return nn_fail(e, NN_EPREEMPTED, "stopped by a signal at step %ld (epoch %ld, %zu/%zu); "
                       "checkpoint %s written; continue with --resume auto", step, epoch, k + 1,
                       T->shard.steps, path);
      if (want && k + 1 == T->shard.steps) T->last_ckpt_time = -1e300; /* forces one below */
    }
    double train_time = now() - t_start;
    double phases[N_PHASES] = {T->t.forward, T->t.backward, T->t.comm, T->t.update, T->t.io}, ph_max[N_PHASES], ph_min[N_PHASES];
    MPI_Allreduce(phases, ph_max, N_PHASES, MPI_DOUBLE, MPI_MAX, T->comm);
    MPI_Allreduce(phases, ph_min, N_PHASES, MPI_DOUBLE, MPI_MIN, T->comm);
    double epoch_sums[2] = {sums[0], sums[1]};
    if (nn_comm_sum_doubles(epoch_sums, 2, T->comm, e)) return e->code;
    double seen = (double)T->shard.steps * (double)cfg->batch_size;
    double seen_now = (double)(T->shard.steps - k0) * (double)cfg->batch_size;
    epoch_report r = {.epoch = epoch, .step = step, .train_loss = epoch_sums[0] / seen,
                      .train_acc = T->train.info.classification ? epoch_sums[1] / seen : NAN,
                      .test_loss = NAN, .test_acc = NAN, .val_loss = NAN, .val_acc = NAN,
                      .samples_per_s = seen_now / train_time, .train_s = train_time,
                      .steps = (long)(T->shard.steps - k0),
                      .lr = T->lr};
    memcpy(r.phase_max, ph_max, sizeof ph_max);
    memcpy(r.phase_min, ph_min, sizeof ph_min);
    double t_eval = now(), ev[3];
    if (T->have_test) {
      if (evaluate(T, 0, ev, NULL, e)) return e->code;
      r.test_loss = ev[0] / ev[2];
      if (T->train.info.classification) r.test_acc = ev[1] / ev[2];
    }
    if (T->shard.val_rows) {
      if (evaluate(T, 1, ev, NULL, e)) return e->code;
      r.val_loss = ev[0] / ev[2];
      if (T->train.info.classification) r.val_acc = ev[1] / ev[2];
    }
    T->t.eval += now() - t_eval;
    if (cfg->perturb_rank == T->rank && epoch == 1) T->params[0] += 1e-3f; /* test hook */
    if (cfg->check_sync_every > 0 && epoch % cfg->check_sync_every == 0) {
      double t0 = now();
      if (nn_comm_check_replicas(T->params, T->model.lay.n_params, T->comm, e)) return e->code;
      T->t.comm += now() - t0;
    }
    int stop = T->ctl[CTL_STOP] > 0;
    if ((cfg->ckpt_every > 0 && epoch % cfg->ckpt_every == 0) || epoch == cfg->epochs || stop ||
        T->last_ckpt_time < 0) {
      double t0 = now(), none[2] = {0, 0};
      if (write_checkpoint(T, epoch, 0, step, none, path, sizeof path, e)) return e->code;
      T->t.ckpt += now() - t0;
    }
    int improved = T->shard.val_rows && r.val_loss < T->best_val_loss;
    if (improved) { /* the best model so far, kept apart from the newest ones */
      double t0 = now(), none[2] = {0, 0};
      char best[NN_PATH_MAX + 16];
      T->best_val_loss = r.val_loss;
      T->best_epoch = epoch;
      snprintf(best, sizeof best, "%s/best.h5", cfg->ckpt_dir);
      if (write_checkpoint_to(T, best, epoch, 0, step, none, e)) return e->code;
      T->t.ckpt += now() - t0;
    }
    r.time_s = now() - t_start;
    r.t = T->t;
    if (T->rank == 0) report_epoch(T, &r);
    if (cfg->patience > 0 && epoch - T->best_epoch >= cfg->patience) {
      if (T->rank == 0)
        printf("early stop after epoch %ld: no better validation loss for %ld epochs; best: epoch %ld, "
               "val_loss %.4f, in %s/best.h5\n", epoch, cfg->patience, T->best_epoch, T->best_val_loss,
               cfg->ckpt_dir);
      if (!(cfg->ckpt_every > 0 && epoch % cfg->ckpt_every == 0) && epoch != cfg->epochs) {
        double none[2] = {0, 0};
        if (write_checkpoint(T, epoch, 0, step, none, path, sizeof path, e)) return e->code;
      }
      break;
    }
    if (stop && epoch < cfg->epochs)
      return nn_fail(e, NN_EPREEMPTED, "stopped by a signal at the end of epoch %ld (step %ld); "
                     "checkpoint %s written; continue with --resume auto", epoch, step, path);
  }
  if (T->train.info.classification && (T->have_test || T->shard.val_rows) && final_report(T, e)) return e->code;
  report_memory(T);
  if (T->rank == 0 && path[0]) printf("done: %ld steps; final checkpoint %s\n", step, path);
  return 0;
}

int nn_train(const nn_config *cfg, const char *config_text, MPI_Comm comm, nn_error *e) {
  trainer T = {.cfg = cfg, .config_text = config_text, .comm = comm};
  MPI_Comm_rank(comm, &T.rank);
  MPI_Comm_size(comm, &T.world);
  if (setup(&T, e) == 0) run_epochs(&T, e);
  teardown(&T);
  return e->code;
}
