/* Collectives: error agreement, gradient sums (one allreduce, overlapped slices, or node-shared
 * memory), replica checks, config sharing. */
#include "nnmpi/comm.h"

#include "nnmpi/optim.h"
#include "nnmpi/rng.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void nn_comm_prepare_heap(void) {
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
}

int nn_comm_agree(nn_error *e, MPI_Comm comm) {
  int rank, mine, first;
  MPI_Comm_rank(comm, &rank);
  mine = e->code ? rank : INT_MAX;
  if (MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm) != MPI_SUCCESS) MPI_Abort(comm, 1);
  if (first == INT_MAX) return 0;
  nn_error shared = *e;
  if (MPI_Bcast(&shared, (int)sizeof shared, MPI_BYTE, first, comm) != MPI_SUCCESS) MPI_Abort(comm, 1);
  *e = shared;
  return e->code;
}

int nn_comm_allreduce_sum(float *buf, size_t n, MPI_Comm comm, nn_error *e) {
  while (n > 0) {
    int piece = n > INT_MAX ? INT_MAX : (int)n;
    if (MPI_Allreduce(MPI_IN_PLACE, buf, piece, MPI_FLOAT, MPI_SUM, comm) != MPI_SUCCESS)
      return nn_fail(e, NN_EMPI, "MPI_Allreduce of the gradient failed");
    buf += piece;
    n -= (size_t)piece;
  }
  return 0;
}

void nn_grad_sync_ready(void *ctx, size_t offset, size_t count) {
  nn_grad_sync *s = ctx;
  if (offset + count == s->n_params) count += s->extra;
  if (s->n_req == NN_MAX_SLICES || count > INT_MAX) { /* cannot post it: reduce it now */
    if (nn_comm_allreduce_sum(s->grad + offset, count, s->comm, &(nn_error){0})) s->failed = 1;
  } else if (MPI_Iallreduce(MPI_IN_PLACE, s->grad + offset, (int)count, MPI_FLOAT, MPI_SUM, s->comm,
                            &s->req[s->n_req++]) != MPI_SUCCESS) {
    s->failed = 1;
  }
  int done; /* drive the progress of the reductions already posted */
  MPI_Testall(s->n_req, s->req, &done, MPI_STATUSES_IGNORE);
}

int nn_grad_sync_wait(nn_grad_sync *s, nn_error *e) {
  int rc = MPI_Waitall(s->n_req, s->req, MPI_STATUSES_IGNORE) != MPI_SUCCESS || s->failed;
  s->n_req = 0;
  s->failed = 0;
  return rc ? nn_fail(e, NN_EMPI, "MPI_Iallreduce of the gradient failed") : 0;
}

int nn_comm_time_allreduce(float *buf, size_t n, int calls, MPI_Comm comm, double *seconds, nn_error *e) {
  double best = 0;
  for (int i = 0; i < calls; i++) {
    MPI_Barrier(comm);
    double t0 = MPI_Wtime();
    if (nn_comm_allreduce_sum(buf, n, comm, e)) return e->code;
    double dt = MPI_Wtime() - t0;
    if (i == 0 || dt < best) best = dt;
  }
  if (MPI_Allreduce(&best, seconds, 1, MPI_DOUBLE, MPI_MAX, comm) != MPI_SUCCESS)
    return nn_fail(e, NN_EMPI, "MPI_Allreduce of the allreduce timing failed");
  return 0;
}

int nn_comm_sum_doubles(double *buf, int n, MPI_Comm comm, nn_error *e) {
  if (MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
    return nn_fail(e, NN_EMPI, "MPI_Allreduce of metrics failed");
  return 0;
}

int nn_comm_check_replicas(const float *params, size_t n, MPI_Comm comm, nn_error *e) {
  uint64_t h = nn_hash_floats(params, n);
  uint64_t mine[2] = {h, ~h}, all[2]; /* max(h) and ~min(h) in one reduction */
  if (MPI_Allreduce(mine, all, 2, MPI_UINT64_T, MPI_MAX, comm) != MPI_SUCCESS)
    return nn_fail(e, NN_EMPI, "MPI_Allreduce of the weight hash failed");
  if (all[0] != ~all[1])
    return nn_fail(e, NN_EREPLICA, "ranks hold different weights (hashes %016llx .. %016llx): "
                   "replicas diverged, please report this as a bug",
                   (unsigned long long)~all[1], (unsigned long long)all[0]);
  return 0;
}

int nn_comm_read_file(const char *path, char **text, MPI_Comm comm, nn_error *e) {
  int rank;
  MPI_Comm_rank(comm, &rank);
  long long len = 0;
  *text = NULL;
  if (rank == 0) {
    FILE *f = fopen(path, "rb");
    if (!f) {
      nn_fail(e, NN_ECONFIG, "%s: cannot open: %s", path, strerror(errno));
    } else {
      char *buf = NULL;
      size_t cap = 0, used = 0, got;
      do {
        if (used + 4096 + 1 > cap) {
          char *nb = realloc(buf, cap = 2 * cap + 4096 + 1);
          if (!nb) break;
          buf = nb;
        }
        got = fread(buf + used, 1, cap - used - 1, f);
        used += got;
      } while (got > 0);
      if (ferror(f) || !buf) nn_fail(e, NN_ECONFIG, "%s: cannot read", path);
      else if (memchr(buf, '\0', used)) nn_fail(e, NN_ECONFIG, "%s: not a text file (NUL byte)", path);
      fclose(f);
      if (buf) buf[used] = '\0';
      *text = buf;
      len = (long long)used;
    }
  }
  if (nn_comm_agree(e, comm)) {
    free(*text);
    *text = NULL;
    return e->code;
  }
  MPI_Bcast(&len, 1, MPI_LONG_LONG, 0, comm);
  if (rank != 0 && !(*text = malloc((size_t)len + 1))) nn_fail(e, NN_ENOMEM, "out of memory");
  if (nn_comm_agree(e, comm)) {
    free(*text);
    *text = NULL;
    return e->code;
  }
  MPI_Bcast(*text, (int)len + 1, MPI_CHAR, 0, comm);
  return 0;
}

int nn_comm_bcast_floats(float *buf, size_t n, int root, MPI_Comm comm, nn_error *e) {
  while (n > 0) {
    int piece = n > INT_MAX ? INT_MAX : (int)n;
    if (MPI_Bcast(buf, piece, MPI_FLOAT, root, comm) != MPI_SUCCESS)
      return nn_fail(e, NN_EMPI, "MPI_Bcast failed");
    buf += piece;
    n -= (size_t)piece;
  }
  return 0;
}

/* ---- node-shared memory ([train] allreduce = shm) ------------------------------------------ */

void nn_shm_sync(void *ctx) { /* the MPI-3 shared-memory pattern: sync, barrier, sync */
  nn_shm *s = ctx;
  MPI_Win_sync(s->win);
  MPI_Barrier(s->node);
  MPI_Win_sync(s->win);
}

int nn_shm_fake_node_ranks = 0;

static size_t align64(size_t x) { return (x + 63) / 64 * 64; }

int nn_shm_init(nn_shm *s, MPI_Comm comm, size_t n, size_t extra, int n_state, size_t local_rows,
                size_t row_bytes, size_t fixed_bytes, int required, nn_error *e) {
  memset(s, 0, sizeof *s);
  s->node = s->cross = MPI_COMM_NULL;
  s->win = MPI_WIN_NULL;
  s->live = 1;
  s->n = n;
  s->extra = extra;
  int rank, sizes[2];
  MPI_Comm_rank(comm, &rank);
  if (nn_shm_fake_node_ranks > 0) /* test hook: consecutive ranks, all on this host */
    MPI_Comm_split(comm, rank / nn_shm_fake_node_ranks, rank, &s->node);
  else
    MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &s->node);
  MPI_Comm_rank(s->node, &s->node_rank);
  MPI_Comm_size(s->node, &s->node_size);
  MPI_Comm_split(comm, s->node_rank, rank, &s->cross); /* world rank 0 is cross rank 0 */
  MPI_Comm_size(s->cross, &s->nodes);
  sizes[0] = s->node_size;
  sizes[1] = -s->node_size;
  MPI_Allreduce(MPI_IN_PLACE, sizes, 2, MPI_INT, MPI_MAX, comm); /* the same answer everywhere */
  s->equal = sizes[0] == -sizes[1];
  if (!s->equal || extra > NN_SHM_MAX_EXTRA || n_state > 2 || (!required && s->node_size < 2)) {
    if (required)
      nn_fail(e, NN_ECONFIG, "[train] allreduce = shm needs the same number of ranks on every node "
              "(found %d to %d): use blocking or auto", -sizes[1], sizes[0]);
    nn_shm_free(s);
    return e->code;
  }
  unsigned long long mine_rows = local_rows, before = 0, total = 0;
  MPI_Exscan(&mine_rows, &before, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, s->node);
  MPI_Allreduce(&mine_rows, &total, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, s->node);
  s->row0 = s->node_rank == 0 ? 0 : (size_t)before;
  s->rows = (size_t)total;
  /* node rank 0 allocates it all: flags, parameters, optimizer state, gradient, batch */
  size_t off_params = align64((size_t)s->node_size * (2 + extra) * sizeof(double));
  size_t vec = align64(n * sizeof(float));
  size_t off_batch = off_params + (size_t)(2 + n_state) * vec;
  size_t bytes = s->node_rank == 0 ? off_batch + s->rows * row_bytes + fixed_bytes : 0;
  MPI_Info info;
  MPI_Info_create(&info);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");
  void *mine;
  int rc = MPI_Win_allocate_shared((MPI_Aint)bytes, 1, info, s->node, &mine, &s->win);
  MPI_Info_free(&info);
  if (rc != MPI_SUCCESS) {
    nn_fail(e, NN_ENOMEM, "cannot allocate node-shared memory for %zu parameters and %zu batch rows", n,
            s->rows);
    nn_shm_free(s);
    return e->code;
  }
  MPI_Aint size;
  int unit;
  char *base;
  MPI_Win_shared_query(s->win, 0, &size, &unit, &base);
  s->flags = (double *)base;
  s->params = (float *)(base + off_params);
  for (int i = 0; i < n_state; i++) s->state[i] = (float *)(base + off_params + (size_t)(1 + i) * vec);
  s->grad = (float *)(base + off_params + (size_t)(1 + n_state) * vec);
  s->batch = base + off_batch;
  MPI_Win_lock_all(MPI_MODE_NOCHECK, s->win);
  return 0;
}

void nn_shm_free(nn_shm *s) {
  if (!s->live) return;
  s->live = 0;
  if (s->win != MPI_WIN_NULL) {
    MPI_Win_unlock_all(s->win);
    MPI_Win_free(&s->win);
  }
  if (s->cross != MPI_COMM_NULL) MPI_Comm_free(&s->cross);
  if (s->node != MPI_COMM_NULL) MPI_Comm_free(&s->node);
  s->params = s->grad = NULL;
  s->batch = NULL;
}

int nn_shm_reduce(nn_shm *s, const size_t *lo, const size_t *hi, int n_ranges, float *ctl,
                  double *sumsq, nn_error *e) {
  int rc = 0;
  if (s->nodes > 1) { /* MPI failures abort by default; rc only matters with another handler */
    for (int i = 0; i < n_ranges && !rc; i++)
      rc = nn_comm_allreduce_sum(s->grad + lo[i], hi[i] - lo[i], s->cross, e);
    if (!rc) rc = nn_comm_allreduce_sum(ctl, s->extra, s->cross, e);
  }
  if (!sumsq) return rc; /* this rank updates what it computed (and summed): no barrier needed */
  double sq = 0.0;
  for (int i = 0; i < n_ranges; i++) sq += nn_sumsq(s->grad + lo[i], hi[i] - lo[i]);
  s->flags[(size_t)s->node_rank * (2 + s->extra) + 1] = sq;
  nn_shm_sync(s);
  double total = 0.0; /* every rank adds the same numbers in the same order */
  for (int q = 0; q < s->node_size; q++) total += s->flags[(size_t)q * (2 + s->extra) + 1];
  *sumsq = total;
  return rc;
}

int nn_shm_fence(nn_shm *s, float *ctl, int finite) {
  double *mine = s->flags + (size_t)s->node_rank * (2 + s->extra);
  mine[0] = !finite;
  for (size_t k = 0; k < s->extra; k++) mine[2 + k] = ctl[k];
  nn_shm_sync(s);
  /* every rank adds the same numbers in the same order: the same verdicts everywhere */
  double sum[NN_SHM_MAX_EXTRA] = {0};
  int all_finite = 1;
  for (int q = 0; q < s->node_size; q++) {
    const double *f = s->flags + (size_t)q * (2 + s->extra);
    all_finite &= f[0] == 0.0;
    for (size_t k = 0; k < s->extra; k++) sum[k] += f[2 + k];
  }
  for (size_t k = 0; k < s->extra; k++) ctl[k] = (float)sum[k];
  return all_finite;
}

int nn_shm_bcast(nn_shm *s, float *buf, size_t n, nn_error *e) {
  int rc = s->node_rank == 0 && s->nodes > 1 ? nn_comm_bcast_floats(buf, n, 0, s->cross, e) : 0;
  nn_shm_sync(s);
  return rc;
}
