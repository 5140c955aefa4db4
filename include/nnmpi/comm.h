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

/* Times MPI_Allreduce(SUM) of n floats of buf (its contents are overwritten): `calls` calls,
 * each after a barrier. *seconds = the slowest rank's fastest call. */
int nn_comm_time_allreduce(float *buf, size_t n, int calls, MPI_Comm comm, double *seconds, nn_error *e);

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

/* [train] allreduce = shm: the ranks of a node share one copy of the parameters, the
 * optimizer state and the gradient (MPI-3 shared memory), and the node's batch buffers, so that
 * each rank can compute 1/S of every layer for the node's whole batch (nn_node_step in model.h;
 * S ranks per node). The node's gradient then comes out summed over its rows without a
 * reduction, each rank holding its own ranges of it; nn_shm_reduce sums those ranges across
 * nodes (the ranks of the same node rank, MPI_Allreduce); each rank updates its ranges, checking
 * them for NaN and Inf as it goes; nn_shm_fence ends the step and shares the verdicts. Needs
 * the same number of ranks on every node. */
#define NN_SHM_MAX_EXTRA 8
typedef struct nn_shm {
  MPI_Comm node, cross;     /* the ranks sharing memory; the ranks of one node rank, over nodes */
  MPI_Win win;
  int node_rank, node_size, nodes;
  int equal;                /* every node runs node_size ranks */
  size_t n, extra;          /* parameters; control slots summed with the verdicts */
  size_t rows, row0;        /* the node's batch rows (all its ranks'), this rank's first row */
  float *params;            /* shared, n floats each */
  float *state[2];
  float *grad;
  void *batch;              /* shared: the node's batch buffers (batch_bytes at nn_shm_init) */
  double *flags;            /* shared: node_size x (2 + extra): non-finite, sum of squares, slots */
  int live;                 /* set by nn_shm_init, cleared by nn_shm_free */
} nn_shm;

/* Collective over comm. local_rows: this rank's batch rows; the batch area holds
 * rows x row_bytes + fixed_bytes for the node's rows. With unequal ranks per node: fails
 * (NN_ECONFIG) when required, else returns 0 with s->live == 0 (the caller sums some other
 * way), as it also does when not required and every node runs one rank; s->node_size and
 * s->equal then say why. */
int nn_shm_init(nn_shm *s, MPI_Comm comm, size_t n, size_t extra, int n_state, size_t local_rows,
                size_t row_bytes, size_t fixed_bytes, int required, nn_error *e);
/* Test hook, set before nn_shm_init: group every this many consecutive ranks as one "node"
 * (they still share memory only if they are on one host), so that one host can exercise the
 * cross-node path. 0: the real nodes. */
extern int nn_shm_fake_node_ranks;
void nn_shm_free(nn_shm *s);
/* Barrier over the node after which every write to the shared memory before it is visible to
 * every rank of the node. ctx is an nn_shm (the nn_node_step sync callback). */
void nn_shm_sync(void *ctx);
/* This rank's ranges [lo[i], hi[i]) of the gradient are final for its node: sums them across
 * nodes, and ctl (extra slots) across the ranks of the same node rank. With sumsq not NULL
 * (clipping), also the sum of squares of the whole gradient, the same on every rank (one
 * barrier); else no barrier: each rank goes on to update the ranges it computed. */
int nn_shm_reduce(nn_shm *s, const size_t *lo, const size_t *hi, int n_ranges, float *ctl,
                  double *sumsq, nn_error *e);
/* Ends the step after each rank's update of its ranges: one barrier, after which every range
 * is written before any rank reads the parameters again. It also shares the verdicts: returns
 * 1 when every rank of the node passed finite != 0, and ctl becomes the sum over all ranks.
 * The same results on every rank, since nn_shm_reduce has summed across nodes. */
int nn_shm_fence(nn_shm *s, float *ctl, int finite);
/* World rank 0's n floats at buf (a shared buffer of nn_shm) to every node's copy. */
int nn_shm_bcast(nn_shm *s, float *buf, size_t n, nn_error *e);

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
