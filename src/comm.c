/* Collectives: error agreement, gradient sums, replica checks, config sharing. */
#include "nnmpi/comm.h"

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

int nn_comm_sum_doubles(double *buf, int n, MPI_Comm comm, nn_error *e) {
  if (MPI_Allreduce(MPI_IN_PLACE, buf, n, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
    return nn_fail(e, NN_EMPI, "MPI_Allreduce of metrics failed");
  return 0;
}

int nn_comm_check_replicas(const float *params, size_t n, MPI_Comm comm, nn_error *e) {
  uint64_t h = nn_hash_bytes(params, n * sizeof(float));
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
