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

typedef struct nn_ckpt_meta {
  long epoch;      /* epochs completed */
  long step;       /* global steps completed */
  int world_size;  /* ranks of the run that wrote it */
  int has_velocity;
} nn_ckpt_meta;

/* Write a checkpoint to path (its directory must exist). velocity may be NULL. */
int nn_ckpt_write(const char *path, const nn_config *cfg, const char *config_text,
                  const nn_layout *lay, const float *params, const float *velocity,
                  const nn_ckpt_meta *meta, nn_error *e);

/* Read a checkpoint written for the same layer sizes into params (and velocity, when it is
 * non-NULL and the file has one; else velocity is zeroed). Fails with NN_ECKPT naming the file
 * and the problem: not a checkpoint, other layer sizes, checksum mismatch, truncation. */
int nn_ckpt_read(const char *path, const nn_layout *lay, float *params, float *velocity,
                 nn_ckpt_meta *meta, nn_error *e);

/* Create dir (and parents) if needed and check that a file can be created in it. */
int nn_ckpt_prepare_dir(const char *dir, nn_error *e);

#endif
