/* Data sets in HDF5: a features matrix X (N, F) and labels y, either int class ids (N) or
 * float targets (N, T). Each rank reads only its own rows, with collective hyperslab reads
 * through parallel HDF5 (MPI-IO). */
#ifndef NNMPI_DATA_H
#define NNMPI_DATA_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "nnmpi/error.h"

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
 * before training from a stream. */
int nn_data_load(nn_dataset *d, const char *path, const char *x_name, const char *y_name,
                 size_t begin, size_t end, long n_classes, int validate_only, MPI_Comm comm,
                 nn_error *e);

void nn_data_free(nn_dataset *d);

#endif
