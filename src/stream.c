/* Streaming a training shard from disk with read-ahead on a background thread.
 *
 * Each owned partition has `slots` chunk buffers. The reader thread loads chunks in the order
 * the epoch needs them: always the partition whose next needed chunk comes earliest, as long as
 * it has a free slot. The training thread copies the rows of each step out of the slots and
 * frees a slot once the step position has passed the end of its chunk. Since a step takes
 * B/P <= chunk_rows rows per partition, a step touches at most 3 chunks of a partition (one may
 * be a short last chunk), so 3 slots never deadlock. */
#include <hdf5.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nnmpi/data.h"

static pthread_mutex_t hdf5_mutex = PTHREAD_MUTEX_INITIALIZER;
void nn_hdf5_lock(void) { pthread_mutex_lock(&hdf5_mutex); }
void nn_hdf5_unlock(void) { pthread_mutex_unlock(&hdf5_mutex); }

enum { SLOT_FREE, SLOT_LOADING, SLOT_READY };

typedef struct slot {
  int state;
  size_t chunk;      /* chunk id within the partition */
  size_t seq_index;  /* its place in the epoch's sequence */
  float *X;          /* (chunk_rows, F) */
  int32_t *labels;   /* (chunk_rows) */
  float *targets;    /* (chunk_rows, T) */
} slot;

typedef struct part {
  size_t begin;      /* first row, local to the shard */
  size_t len;        /* training rows */
  size_t n_chunks;
  size_t *seq;       /* chunk ids in visiting order (n_chunks) */
  size_t *seq_start; /* position where seq[i] starts (n_chunks + 1) */
  size_t next_load;  /* next seq index the reader loads */
  slot *slots;
} part;

struct nn_stream {
  nn_shard s;
  nn_data_info info;
  char path[1024], x_name[128], y_name[128];
  int n_slots;
  part *parts;
  const size_t *order;
  int64_t *ybuf;     /* (chunk_rows) labels as read, for range checks */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop, running, epoch_gen;
  nn_error err;      /* the reader's first failure */
};

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

size_t nn_stream_bytes(const nn_shard *s, const nn_data_info *info, int slots) {
  size_t row = (info->n_features + info->n_targets) * sizeof(float);
  return (size_t)s->p_count * (size_t)slots * s->chunk_rows * row;
}

/* Read rows [r0, r0 + n) of the file into a slot. Called with hdf5_mutex held. */
static int read_chunk(nn_stream *st, hid_t x, hid_t y, size_t r0, size_t n, slot *sl) {
  const nn_data_info *in = &st->info;
  int rc = nn_data_read_rows(x, H5P_DEFAULT, H5T_NATIVE_FLOAT, r0, n, in->n_features, sl->X) < 0 ||
           (in->classification
                ? nn_data_read_rows(y, H5P_DEFAULT, H5T_NATIVE_INT64, r0, n, 1, st->ybuf)
                : nn_data_read_rows(y, H5P_DEFAULT, H5T_NATIVE_FLOAT, r0, n, in->n_targets, sl->targets)) < 0;
  for (size_t i = 0; !rc && in->classification && i < n; i++) sl->labels[i] = (int32_t)st->ybuf[i];
  return rc;
}

/* The partition whose next chunk to load is needed earliest and that has a free slot. */
static int pick(nn_stream *st, int *slot_index) {
  int best = -1;
  for (int j = 0; j < st->s.p_count; j++) {
    part *p = &st->parts[j];
    if (p->next_load >= p->n_chunks) continue;
    if (best >= 0 && p->seq_start[p->next_load] >= st->parts[best].seq_start[st->parts[best].next_load]) continue;
    for (int k = 0; k < st->n_slots; k++)
      if (p->slots[k].state == SLOT_FREE) {
        best = j;
        *slot_index = k;
        break;
      }
  }
  return best;
}

static void *reader(void *arg) {
  nn_stream *st = arg;
  nn_hdf5_lock();
  hid_t f = H5Fopen(st->path, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t x = f >= 0 ? H5Dopen2(f, st->x_name, H5P_DEFAULT) : -1;
  hid_t y = f >= 0 ? H5Dopen2(f, st->y_name, H5P_DEFAULT) : -1;
  nn_hdf5_unlock();
  pthread_mutex_lock(&st->mu);
  if (x < 0 || y < 0) nn_fail(&st->err, NN_EDATA, "%s: cannot open for streaming", st->path);
  while (!st->stop && !st->err.code) {
    int k = -1, j = st->order ? pick(st, &k) : -1;
    if (j < 0) {
      pthread_cond_wait(&st->cv, &st->mu);
      continue;
    }
    part *p = &st->parts[j];
    slot *sl = &p->slots[k];
    size_t chunk = p->seq[p->next_load++], r0 = chunk * st->s.chunk_rows;
    size_t n = p->len - r0 < st->s.chunk_rows ? p->len - r0 : st->s.chunk_rows;
    int gen = st->epoch_gen;
    sl->state = SLOT_LOADING;
    sl->chunk = chunk;
    sl->seq_index = p->next_load - 1;
    pthread_mutex_unlock(&st->mu);
    nn_hdf5_lock();
    int failed = read_chunk(st, x, y, st->s.row_begin + p->begin + r0, n, sl);
    nn_hdf5_unlock();
    pthread_mutex_lock(&st->mu);
    if (failed)
      nn_fail(&st->err, NN_EDATA, "%s: streaming read of rows %zu..%zu failed (file changed or "
              "truncated?)", st->path, st->s.row_begin + p->begin + r0, st->s.row_begin + p->begin + r0 + n);
    sl->state = gen == st->epoch_gen ? SLOT_READY : SLOT_FREE; /* a new epoch began meanwhile */
    pthread_cond_broadcast(&st->cv);
  }
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  nn_hdf5_lock();
  if (x >= 0) H5Dclose(x);
  if (y >= 0) H5Dclose(y);
  if (f >= 0) H5Fclose(f);
  nn_hdf5_unlock();
  return NULL;
}

void nn_stream_close(nn_stream *st) {
  if (!st) return;
  if (st->running) {
    pthread_mutex_lock(&st->mu);
    st->stop = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    pthread_join(st->thread, NULL);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
  }
  for (int j = 0; st->parts && j < st->s.p_count; j++) {
    part *p = &st->parts[j];
    for (int k = 0; p->slots && k < st->n_slots; k++) {
      free(p->slots[k].X);
      free(p->slots[k].labels);
      free(p->slots[k].targets);
    }
    free(p->slots);
    free(p->seq);
    free(p->seq_start);
  }
  free(st->parts);
  free(st->ybuf);
  free(st);
}

int nn_stream_open(nn_stream **out, const char *path, const char *x_name, const char *y_name,
                   const nn_shard *s, const nn_data_info *info, int slots, nn_error *e) {
  nn_stream *st = calloc(1, sizeof *st);
  *out = NULL;
  if (!st) return nn_fail(e, NN_ENOMEM, "out of memory");
  st->s = *s;
  st->info = *info;
  st->n_slots = slots;
  snprintf(st->path, sizeof st->path, "%s", path);
  snprintf(st->x_name, sizeof st->x_name, "%s", x_name);
  snprintf(st->y_name, sizeof st->y_name, "%s", y_name);
  size_t C = s->chunk_rows, F = info->n_features, T = info->n_targets;
  int ok = (st->parts = calloc((size_t)s->p_count, sizeof *st->parts)) &&
           (st->ybuf = malloc(C * sizeof *st->ybuf));
  for (int j = 0; ok && j < s->p_count; j++) {
    part *p = &st->parts[j];
    int pid = s->p_first + j;
    p->begin = nn_partition_begin(s->n_rows, s->P, pid) - s->row_begin;
    p->len = nn_partition_val_begin(s, pid) - nn_partition_begin(s->n_rows, s->P, pid);
    p->n_chunks = (p->len + C - 1) / C;
    ok = (p->seq = malloc(p->n_chunks * sizeof *p->seq)) &&
         (p->seq_start = malloc((p->n_chunks + 1) * sizeof *p->seq_start)) &&
         (p->slots = calloc((size_t)slots, sizeof *p->slots));
    for (int k = 0; ok && k < slots; k++) {
      slot *sl = &p->slots[k];
      ok = (sl->X = malloc(C * F * sizeof(float))) != NULL &&
           (info->classification ? (sl->labels = malloc(C * sizeof(int32_t))) != NULL
                                 : (sl->targets = malloc(C * T * sizeof(float))) != NULL);
    }
  }
  if (!ok) {
    nn_stream_close(st);
    return nn_fail(e, NN_ENOMEM, "cannot allocate %zu MiB of streaming buffers",
                   nn_stream_bytes(s, info, slots) >> 20);
  }
  pthread_mutex_init(&st->mu, NULL);
  pthread_cond_init(&st->cv, NULL);
  if (pthread_create(&st->thread, NULL, reader, st) != 0) {
    nn_stream_close(st);
    return nn_fail(e, NN_EINTERNAL, "cannot start the streaming thread");
  }
  st->running = 1;
  *out = st;
  return 0;
}

void nn_stream_begin(nn_stream *st, const size_t *order, size_t k0) {
  pthread_mutex_lock(&st->mu);
  st->epoch_gen++;
  st->order = order;
  size_t C = st->s.chunk_rows, first = k0 * st->s.rows_per_part_batch;
  for (int j = 0; j < st->s.p_count; j++) {
    part *p = &st->parts[j];
    /* the epoch's chunk sequence, read off the order: each chunk's rows are consecutive */
    size_t pos = 0;
    for (size_t i = 0; i < p->n_chunks; i++) {
      size_t chunk = (order[p->begin + pos] - p->begin) / C;
      size_t n = p->len - chunk * C < C ? p->len - chunk * C : C;
      p->seq[i] = chunk;
      p->seq_start[i] = pos;
      pos += n;
    }
    p->seq_start[p->n_chunks] = pos;
    p->next_load = 0;
    while (p->next_load < p->n_chunks && p->seq_start[p->next_load + 1] <= first) p->next_load++;
    for (int k = 0; k < st->n_slots; k++)
      if (p->slots[k].state == SLOT_READY) p->slots[k].state = SLOT_FREE; /* LOADING: freed by the reader */
  }
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
}

/* The ready slot holding `chunk` of partition p, waiting for it; NULL on a reader failure. */
static slot *wait_chunk(nn_stream *st, part *p, size_t chunk, double *wait_s) {
  for (;;) {
    for (int k = 0; k < st->n_slots; k++)
      if (p->slots[k].state == SLOT_READY && p->slots[k].chunk == chunk) return &p->slots[k];
    if (st->err.code) return NULL;
    double t0 = now_s();
    pthread_cond_wait(&st->cv, &st->mu);
    *wait_s += now_s() - t0;
  }
}

int nn_stream_batch(nn_stream *st, size_t k, float *X, int32_t *labels, float *targets,
                    size_t *row_ids, double *wait_s, nn_error *e) {
  size_t bp = st->s.rows_per_part_batch, C = st->s.chunk_rows, F = st->info.n_features;
  size_t T = st->info.n_targets, n = 0;
  pthread_mutex_lock(&st->mu);
  for (int j = 0; j < st->s.p_count; j++) {
    part *p = &st->parts[j];
    for (size_t i = 0; i < bp; i++, n++) {
      size_t r = st->order[p->begin + k * bp + i] - p->begin; /* row within the partition */
      slot *sl = wait_chunk(st, p, r / C, wait_s);
      if (!sl) {
        *e = st->err;
        pthread_mutex_unlock(&st->mu);
        return e->code;
      }
      size_t at = r % C;
      memcpy(X + n * F, sl->X + at * F, F * sizeof(float));
      if (labels) labels[n] = sl->labels[at];
      else memcpy(targets + n * T, sl->targets + at * T, T * sizeof(float));
      row_ids[n] = st->s.row_begin + p->begin + r;
    }
    /* free the chunks this partition has used up */
    size_t done = (k + 1) * bp;
    for (int s = 0; s < st->n_slots; s++)
      if (p->slots[s].state == SLOT_READY && p->seq_start[p->slots[s].seq_index + 1] <= done)
        p->slots[s].state = SLOT_FREE;
  }
  pthread_cond_broadcast(&st->cv);
  pthread_mutex_unlock(&st->mu);
  return 0;
}
