/* HDF5 checkpoints, written by one rank, readable by any HDF5 tool:
 *   /model/W1 .. /model/WL   float32 (n_l, n_{l-1})      /model/b1 .. /model/bL  float32 (n_l)
 *   /optimizer/W1 ..          momentum buffers, same shapes (only when momentum is used)
 *   root attributes: format = "nnmpi-checkpoint", version, epoch, step, layers, activation,
 *   output, loss, world_size, seed, config (the full config text).
 * Every dataset is chunked with a Fletcher32 checksum. The file is built in memory, written to
 * a temporary name in the same directory, fsync'ed and renamed into place, so a crash or a full
 * disk never leaves a broken file under a checkpoint's name. Not collective. */
#ifndef NNMPI_CHECKPOINT_H
#define NNMPI_CHECKPOINT_H

#include <stddef.h>

#include "nnmpi/config.h"
#include "nnmpi/error.h"
#include "nnmpi/model.h"

#define NN_CKPT_FORMAT "nnmpi-checkpoint"
#define NN_CKPT_VERSION 1
#define NN_MAX_STATE 2   /* optimizer state buffers (momentum; Adam's m and v) */
#define NN_KEYS_MAX 1024

/* Where training stands: enough to continue exactly where it stopped. */
typedef struct nn_ckpt_meta {
  long epoch;            /* epochs completed */
  long step_in_epoch;    /* steps done of epoch `epoch + 1` (0 at an epoch boundary) */
  long step;             /* global steps completed */
  int world_size;        /* ranks of the run that wrote it */
  double epoch_sums[3];  /* training loss sum, correct count, samples so far in the epoch */
  int n_state;           /* optimizer state buffers found on read */
  double best_val_loss;  /* early stopping state: the best validation loss so far ... */
  long best_epoch;       /* ... and its epoch (0 = none) */
  char shape_keys[NN_KEYS_MAX];      /* nn_config_keys_string(NN_KEYS_SHAPE) of the writer */
  char trajectory_keys[NN_KEYS_MAX]; /* nn_config_keys_string(NN_KEYS_TRAJECTORY) */
} nn_ckpt_meta;

/* Bytes the writer's in-memory image is expected to take (parameters and n_state optimizer
 * buffers, plus room for the metadata). While writing, rank 0 holds this image and one copy. */
size_t nn_ckpt_image_estimate(const nn_layout *lay, int n_state);

/* Write a checkpoint to path (its directory must exist). state[0 .. n_state) are optimizer
 * buffers with the layout of params, stored as /optimizer/<state_names[i]>/W1 ... */
int nn_ckpt_write(const char *path, const nn_config *cfg, const char *config_text,
                  const nn_layout *lay, const float *params, int n_state,
                  const float *const *state, const char *const *state_names,
                  const nn_ckpt_meta *meta, nn_error *e);

/* Read a checkpoint written for the same layer sizes into params, and the optimizer buffers
 * named state_names[0 .. n_state) into state[i] (zeroed when the file lacks them; NULL entries
 * are skipped). Fails with NN_ECKPT naming the file and the problem: not a checkpoint, other
 * layer sizes, checksum mismatch, truncation. With lay == NULL only the attributes are read
 * into meta (no layer check, no datasets). */
int nn_ckpt_read(const char *path, const nn_layout *lay, float *params, int n_state,
                 float *const *state, const char *const *state_names, nn_ckpt_meta *meta,
                 nn_error *e);

/* The file name of a checkpoint: DIR/ckpt-eEEEE-sSSSSSSSSS.h5 (epochs done, global step), so
 * that names sort in the order they were written. */
void nn_ckpt_path(char *buf, size_t n, const char *dir, long epoch, long step);

/* Checkpoint files in dir (names as nn_ckpt_path makes them), newest first, as full paths in
 * one malloc'ed array of NN_PATH_MAX-sized strings (free it). Returns the count, or -1. */
int nn_ckpt_list(const char *dir, char (**paths)[NN_PATH_MAX]);

/* Delete all but the `keep` newest checkpoints of dir (keep <= 0: delete none). */
void nn_ckpt_prune(const char *dir, long keep);

/* Create dir (and parents) if needed, check that a file can be created in it, and remove
 * temporary files left by a writer that was killed. */
int nn_ckpt_prepare_dir(const char *dir, nn_error *e);

#endif
