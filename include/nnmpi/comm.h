/* Everything the ranks say to each other: agreeing on errors, summing gradients, checking
 * that every rank holds the same weights, sharing the config text. All functions here are
 * collective over comm: every rank must call them, in the same order. */
#ifndef NNMPI_COMM_H
#define NNMPI_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

#include "nnmpi/error.h"

/* Call before MPI_Init. Keeps freed memory in the process heap instead of returning it to the
 * kernel (glibc: no mmap'd blocks, no trimming). Open MPI's allreduce allocates and frees a
 * temporary buffer of its own per call; above glibc's 32 MB mmap limit each call then faults in
 * fresh zeroed pages. Measured here, 2 ranks, 100 MB: 43 ms per MPI_Allreduce by default, 21 ms
 * with this (README, Performance). Our own buffers are allocated once, so the heap only grows to
 * the peak that would be reached anyway. */
void nn_comm_prepare_heap(void);

/* Every rank passes its own e (code 0 when it found nothing wrong). On return every rank
 * holds the code and message of the lowest-numbered failing rank; returns that code (0 when
 * no rank failed). This is how one rank's bad input stops all ranks together. */
int nn_comm_agree(nn_error *e, MPI_Comm comm);

/* In-place MPI_Allreduce(SUM) of n floats (split into pieces of at most INT_MAX). */
int nn_comm_allreduce_sum(float *buf, size_t n, MPI_Comm comm, nn_error *e);

/* Overlapped gradient reduction: one MPI_Iallreduce(SUM) per slice of the flat gradient as
 * backprop finishes it (nn_grad_hook), driven by MPI_Testall at every new slice, completed by
 * nn_grad_sync_wait before the update. Every rank posts the same slices in the same order. */
#define NN_MAX_SLICES 256
typedef struct nn_grad_sync {
  MPI_Comm comm;
  float *grad;
  size_t n_params, extra;   /* slots after the gradient, reduced with the slice that ends there */
  MPI_Request req[NN_MAX_SLICES];
  int n_req, failed;
} nn_grad_sync;

/* The nn_grad_hook callback: ctx is an nn_grad_sync. */
void nn_grad_sync_ready(void *ctx, size_t offset, size_t count);
/* Wait for all slices; returns 0 or NN_EMPI. Resets the object for the next step. */
int nn_grad_sync_wait(nn_grad_sync *s, nn_error *e);

/* In-place MPI_Allreduce(SUM) of n doubles. */
int nn_comm_sum_doubles(double *buf, int n, MPI_Comm comm, nn_error *e);

/* Fails with NN_EREPLICA unless params are bit-identical on every rank (hash, MIN and MAX). */
int nn_comm_check_replicas(const float *params, size_t n, MPI_Comm comm, nn_error *e);

/* Rank 0 reads the whole file at path; every rank receives it NUL-terminated in *text (free it
 * with free). Errors are agreed. */
int nn_comm_read_file(const char *path, char **text, MPI_Comm comm, nn_error *e);

/* MPI_Bcast of n floats from root. */
int nn_comm_bcast_floats(float *buf, size_t n, int root, MPI_Comm comm, nn_error *e);

#endif
