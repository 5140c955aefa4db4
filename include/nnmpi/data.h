/* Data sets in HDF5: a features matrix X (N, F) and labels y, either int class ids (N) or
 * float targets (N, T). Each rank reads only its own rows, with collective hyperslab reads
 * through parallel HDF5 (MPI-IO). */
#ifndef NNMPI_DATA_H
#define NNMPI_DATA_H

#include <hdf5.h>
#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "nnmpi/error.h"
#include "nnmpi/shard.h"

typedef struct nn_data_info {
  size_t n_rows;
  size_t n_features;
  int classification;  /* y holds integer class ids */
  size_t n_targets;    /* regression: T; classification: 1 */
  long classes;        /* the `classes` attribute of y, or -1 when absent */
} nn_data_info;

typedef struct nn_dataset {
  nn_data_info info;
  size_t row_begin, n_local;  /* this rank's rows [row_begin, row_begin + n_local) */
  float *X;                   /* (n_local, n_features) */
  int32_t *labels;            /* (n_local) when classification, else NULL */
  float *targets;             /* (n_local, n_targets) for regression, else NULL */
} nn_dataset;

/* Read the shapes and types of x_name and y_name in the file (not collective; each rank may
 * call it). Fails with NN_EDATA naming the file, the dataset and the problem. */
int nn_data_info_read(const char *path, const char *x_name, const char *y_name, nn_data_info *info,
                      nn_error *e);

/* Collective: every rank reads rows [begin, end) (possibly empty) of X and y, then checks
 * that X is finite and labels lie in [0, n_classes) (n_classes <= 0: no check). Errors are
 * agreed: every rank returns the same code and message. With validate_only the rows are read
 * and checked block by block in bounded memory but not kept (d->X etc. stay NULL): the check
 * before training from a stream. With posix, each rank reads with HDF5's POSIX driver instead
 * of collective MPI-IO (still collective as a function: errors are agreed). */
int nn_data_load(nn_dataset *d, const char *path, const char *x_name, const char *y_name,
                 size_t begin, size_t end, long n_classes, int validate_only, int posix,
                 MPI_Comm comm, nn_error *e);

void nn_data_free(nn_dataset *d);

/* Rows [r0, r0 + nr) of a dataset of `cols` columns (1-D or 2-D) into buf, as memory type
 * mtype. nr may be 0: an empty selection, so that a rank can still take part in a collective
 * read (dxpl collective). Returns H5Dread's status. Used by the loader and the stream. */
herr_t nn_data_read_rows(hid_t dset, hid_t dxpl, hid_t mtype, size_t r0, size_t nr, size_t cols,
                         void *buf);

#endif

/* ---- streaming: a training shard larger than [data] memory_limit ----------------------------
 * The shard's rows are read chunk by chunk (nn_shard's chunks, in the epoch's visiting order) by
 * a background thread into a few slots per partition, so reading overlaps training. The thread
 * opens the file with HDF5's serial driver and makes no MPI call. HDF5 is not thread-safe:
 * other HDF5 calls while a stream runs go between nn_hdf5_lock() and nn_hdf5_unlock(). */

typedef struct nn_stream nn_stream;

/* Open a stream over this rank's partitions of s, with `slots` chunk buffers per partition
 * (at least 3). Not collective. */
int nn_stream_open(nn_stream **out, const char *path, const char *x_name, const char *y_name,
                   const nn_shard *s, const nn_data_info *info, int slots, nn_error *e);
void nn_stream_close(nn_stream *st);

/* Bytes of the chunk buffers of a stream with `slots` slots per partition. */
size_t nn_stream_bytes(const nn_shard *s, const nn_data_info *info, int slots);

/* Start an epoch whose visiting order is `order` (from nn_shard_order; it must stay valid
 * during the epoch), at step k0 (a resumed epoch). */
void nn_stream_begin(nn_stream *st, const size_t *order, size_t k0);

/* Copy this rank's rows of step k into X (local_batch, F), labels or targets, and their
 * global row ids; waits for the reader when needed and adds the seconds waited to *wait_s.
 * Steps must come in increasing order within an epoch. Fails (NN_EDATA) when the reader
 * could not read a chunk. */
int nn_stream_batch(nn_stream *st, size_t k, float *X, int32_t *labels, float *targets,
                    size_t *row_ids, double *wait_s, nn_error *e);

void nn_hdf5_lock(void);
void nn_hdf5_unlock(void);
