/* nnmpi-data: makes and checks the HDF5 files the trainer reads: X float32 (N, F) chunked by rows,
 * y int32 (N,) with a `classes` attribute or float32 (N, T). Subcommands import IDX and CSV,
 * generate a synthetic set (in parallel under mpirun), inspect a file and split one. */
#define _POSIX_C_SOURCE 200809L

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <hdf5.h>
#include <mpi.h>
#include <zlib.h>

#include "nnmpi/error.h"
#include "nnmpi/rng.h"

#define PROG "nnmpi-data"
#define FORMAT_NAME "nnmpi-data"
#define MIB ((uint64_t)1 << 20)
#define SYNTH_HIDDEN 32

static const char usage_text[] =
    "usage: nnmpi-data COMMAND ARGS...\n"
    "\n"
    "  import-idx IMAGES LABELS OUT.h5\n"
    "      IDX images (unsigned bytes, magic 0x803) and labels (magic 0x801), gzipped or not,\n"
    "      as MNIST and Fashion-MNIST ship them. X = pixel / 255.\n"
    "  import-csv IN.csv OUT.h5 --label-column K [--header]\n"
    "      numeric CSV (may be gzipped); column K (0-based, -1 = last) is the integer class,\n"
    "      the other columns are the features. --header skips the first line.\n"
    "  synth OUT.h5 --samples N --features F (--classes C | --targets T)\n"
    "        [--seed S] [--noise SIGMA] [--normal]\n"
    "      learnable data from a random teacher network F -> 32 tanh -> C (or T); X uniform\n"
    "      in [0,1) or standard normal with --normal; labels = argmax of teacher output plus\n"
    "      gaussian noise SIGMA (targets for --targets). Under mpirun every rank writes its\n"
    "      own rows; the file is the same for any number of ranks.\n"
    "  inspect FILE.h5\n"
    "      datasets, shapes, types, chunks, filters; X range and NaN/Inf count; y histogram.\n"
    "      Exits non-zero when the file does not have the layout the trainer reads.\n"
    "  split IN.h5 TRAIN.h5 TEST.h5 --test-fraction P [--seed S]\n"
    "      seeded random split: TEST gets round(P * N) rows, TRAIN the rest, order kept.\n"
    "\n"
    "Options take their value as '--opt V' or '--opt=V'. Defaults: --seed 1, --noise 0.1.\n"
    "Environment: NNMPI_DATA_BLOCK_BYTES sets the I/O block (default 64 MiB);\n"
    "NNMPI_DATA_H5_ERRORS=1 shows HDF5's own error stack.\n"
    "Exit status: 0 success, 2 bad command line, 3 bad input data, 1 other failure.\n";

static int g_rank = 0, g_nranks = 1;
static uint64_t g_block_bytes = 64 * MIB; /* data held per I/O call: bounds memory, not files */

/* ---- small utilities ------------------------------------------------------------------- */

static void *xalloc(uint64_t count, uint64_t size, const char *where, nn_error *e) {
  void *p = NULL;
  if (size != 0 && count > SIZE_MAX / size) {
    nn_fail(e, NN_ENOMEM, "%s: size overflow (%" PRIu64 " x %" PRIu64 " bytes)", where, count,
            size);
    return NULL;
  }
  p = malloc(count * size > 0 ? count * size : 1);
  if (!p) nn_fail(e, NN_ENOMEM, "%s: out of memory (%" PRIu64 " bytes)", where, count * size);
  return p;
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* Rows per I/O block for rows of row_bytes bytes; at least one. */
static uint64_t block_rows(uint64_t row_bytes) {
  uint64_t n = g_block_bytes / (row_bytes ? row_bytes : 1);
  return n ? n : 1;
}

/* Collective: 1 when rc is 0 on every rank. */
static int all_ok(int rc) {
  int ok = rc == 0, all = 0;
  MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  return all;
}

/* ---- progress on stderr (rank 0) ------------------------------------------------------- */

typedef struct progress {
  const char *what;
  double t0, t_last;
  int pct_last;
  int tty;   /* a terminal gets one line redrawn in place, a log gets a line now and then */
  int drawn; /* a \r line is on screen and needs its newline */
} progress;

static void progress_start(progress *p, const char *what) {
  p->what = what;
  p->t0 = p->t_last = MPI_Wtime();
  p->pct_last = 0;
  p->tty = isatty(STDERR_FILENO);
  p->drawn = 0;
}

static void progress_update(progress *p, double done, double total) {
  if (g_rank != 0 || total <= 0) return;
  int pct = (int)(100.0 * done / total);
  double now = MPI_Wtime();
  if (p->tty) {
    if (pct != p->pct_last && now - p->t_last >= 0.2) {
      fprintf(stderr, "\r%s: %s: %3d%%", PROG, p->what, pct);
      p->drawn = 1;
      p->pct_last = pct;
      p->t_last = now;
    }
  } else if (pct >= p->pct_last + 10 && pct < 100 && now - p->t_last >= 2.0) {
    fprintf(stderr, "%s: %s: %d%%\n", PROG, p->what, pct);
    p->pct_last = pct;
    p->t_last = now;
  }
}

/* Ends the progress line; on success also reports the data volume and rate. */
static void progress_end(progress *p, int ok, double bytes) {
  if (g_rank != 0) return;
  double t = MPI_Wtime() - p->t0;
  if (p->drawn) fputs(ok ? "\r\033[K" : "\n", stderr); /* erase the percentage line */
  if (ok)
    fprintf(stderr, "%s: %s: done, %.1f MB in %.2f s (%.1f MB/s)\n", PROG, p->what, bytes / 1e6, t,
            t > 0 ? bytes / 1e6 / t : 0.0);
}

/* ---- command line ---------------------------------------------------------------------- */

typedef struct opt {
  const char *name;  /* without the leading "--" */
  int has_value;     /* 0 for a flag */
  const char *value; /* set by parse_args: the value ("1" for a flag), NULL when absent */
} opt;

/* Sorts argv into exactly n_pos positionals and the options listed in opts. */
static int parse_args(const char *cmd, int argc, char **argv, opt *opts, int n_opts,
                      const char **pos, int n_pos, nn_error *e) {
  int got = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
      if (got == n_pos) return nn_fail(e, NN_ECONFIG, "%s: unexpected argument '%s'", cmd, a);
      pos[got++] = a;
      continue;
    }
    const char *eq = strchr(a + 2, '=');
    size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
    opt *o = NULL;
    for (int k = 0; k < n_opts; k++)
      if (strlen(opts[k].name) == len && strncmp(opts[k].name, a + 2, len) == 0) o = &opts[k];
    if (!o) return nn_fail(e, NN_ECONFIG, "%s: unknown option '%s'", cmd, a);
    if (!o->has_value) {
      if (eq) return nn_fail(e, NN_ECONFIG, "%s: option --%s takes no value", cmd, o->name);
      o->value = "1";
    } else if (eq) {
      o->value = eq + 1;
    } else if (i + 1 < argc) {
      o->value = argv[++i];
    } else {
      return nn_fail(e, NN_ECONFIG, "%s: option --%s needs a value", cmd, o->name);
    }
  }
  if (got < n_pos)
    return nn_fail(e, NN_ECONFIG, "%s: expected %d file argument(s), got %d (see %s --help)", cmd,
                   n_pos, got, PROG);
  return 0;
}

/* Integer option in [lo, hi]; an absent optional one keeps *out. */
static int parse_int(const char *cmd, const opt *o, int required, int64_t lo, int64_t hi,
                     int64_t *out, nn_error *e) {
  if (!o->value) {
    if (required) return nn_fail(e, NN_ECONFIG, "%s: --%s is required", cmd, o->name);
    return 0;
  }
  char *end = NULL;
  errno = 0;
  long long v = strtoll(o->value, &end, 10);
  if (end == o->value || *end || errno)
    return nn_fail(e, NN_ECONFIG, "%s: --%s: '%s' is not an integer", cmd, o->name, o->value);
  if (v < lo || v > hi)
    return nn_fail(e, NN_ECONFIG, "%s: --%s: %lld is outside [%" PRId64 ", %" PRId64 "]", cmd,
                   o->name, v, lo, hi);
  *out = v;
  return 0;
}

static int parse_real(const char *cmd, const opt *o, int required, double lo, double hi,
                      double *out, nn_error *e) {
  if (!o->value) {
    if (required) return nn_fail(e, NN_ECONFIG, "%s: --%s is required", cmd, o->name);
    return 0;
  }
  char *end = NULL;
  errno = 0;
  double v = strtod(o->value, &end);
  if (end == o->value || *end || errno || !isfinite(v))
    return nn_fail(e, NN_ECONFIG, "%s: --%s: '%s' is not a number", cmd, o->name, o->value);
  if (v < lo || v > hi)
    return nn_fail(e, NN_ECONFIG, "%s: --%s: %g is outside [%g, %g]", cmd, o->name, v, lo, hi);
  *out = v;
  return 0;
}

/* A seed is any unsigned 64-bit integer. */
static int parse_seed(const char *cmd, const opt *o, uint64_t *seed, nn_error *e) {
  if (!o->value) return 0;
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(o->value, &end, 10);
  if (end == o->value || *end || errno || o->value[0] == '-')
    return nn_fail(e, NN_ECONFIG, "%s: --seed: '%s' is not an unsigned integer", cmd, o->value);
  *seed = v;
  return 0;
}

/* ---- HDF5 helpers ---------------------------------------------------------------------- */

/* Names the HDF5 function of a failed call in a one-line message. */
static int h5_fail(nn_error *e, const char *where, const char *expr) {
  const char *f = strstr(expr, "H5");
  size_t n = 0;
  if (!f) f = expr;
  while (f[n] && (isalnum((unsigned char)f[n]) || f[n] == '_')) n++;
  return nn_fail(e, NN_EIO, "%s: %.*s failed", where, (int)n, f);
}

/* Every HDF5 call goes through this: needs `rc`, `e`, `where` and a `cleanup:` label. */
#define H5TRY(expr)                  \
  do {                               \
    if ((expr) < 0) {                \
      rc = h5_fail(e, where, #expr); \
      goto cleanup;                  \
    }                                \
  } while (0)

/* Closes any kind of id and marks it invalid; invalid ids are ignored. */
static herr_t h5_close(hid_t *id) {
  herr_t s = 0;
  if (*id < 0) return 0;
  switch (H5Iget_type(*id)) {
  case H5I_FILE: s = H5Fclose(*id); break;
  case H5I_GROUP: s = H5Gclose(*id); break;
  case H5I_DATASET: s = H5Dclose(*id); break;
  case H5I_DATASPACE: s = H5Sclose(*id); break;
  case H5I_DATATYPE: s = H5Tclose(*id); break;
  case H5I_ATTR: s = H5Aclose(*id); break;
  case H5I_GENPROP_LST: s = H5Pclose(*id); break;
  default: s = H5Oclose(*id); break;
  }
  *id = H5I_INVALID_HID;
  return s;
}

typedef struct dsinfo {
  int ndims;
  hsize_t dims[H5S_MAX_RANK];
  H5T_class_t cls;
  size_t size; /* bytes per element */
  int is_signed;
} dsinfo;

static int ds_info(hid_t dset, dsinfo *d, const char *where, nn_error *e) {
  int rc = 0;
  hid_t space = H5I_INVALID_HID, type = H5I_INVALID_HID;
  H5TRY(space = H5Dget_space(dset));
  H5TRY(d->ndims = H5Sget_simple_extent_dims(space, d->dims, NULL));
  H5TRY(type = H5Dget_type(dset));
  H5TRY(d->cls = H5Tget_class(type));
  d->size = H5Tget_size(type);
  d->is_signed = d->cls == H5T_INTEGER && H5Tget_sign(type) != H5T_SGN_NONE;
cleanup:
  h5_close(&type);
  h5_close(&space);
  return rc;
}

static const char *type_name(const dsinfo *d, char *buf, size_t n) {
  if (d->cls == H5T_INTEGER)
    snprintf(buf, n, "%sint%zu", d->is_signed ? "" : "u", d->size * 8);
  else if (d->cls == H5T_FLOAT)
    snprintf(buf, n, "float%zu", d->size * 8);
  else
    snprintf(buf, n, "%s", d->cls == H5T_STRING ? "string" : "other");
  return buf;
}

/* Python-style shape: "(5, 12)", "(5,)". */
static const char *dims_str(int ndims, const hsize_t *dims, char *buf, size_t n) {
  size_t k = (size_t)snprintf(buf, n, "(");
  for (int i = 0; i < ndims && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%llu", i ? ", " : "", (unsigned long long)dims[i]);
  if (k < n) snprintf(buf + k, n - k, ndims == 1 ? ",)" : ")");
  return buf;
}

/* Elements per row: the product of all dimensions but the first. */
static uint64_t row_width(const dsinfo *d) {
  uint64_t w = 1;
  for (int i = 1; i < d->ndims; i++) w *= d->dims[i];
  return w;
}

/* Reads or writes rows [row0, row0 + n) of dset, all other dimensions whole; buf holds the n
 * rows contiguously. The memory space has the file selection's shape: HDF5 then maps whole
 * chunks instead of iterating element by element. n may be 0: in collective I/O such a rank
 * must still take part. */
static int h5_rows(hid_t dset, hid_t memtype, hid_t dxpl, int writing, uint64_t row0, uint64_t n,
                   void *buf, const char *where, nn_error *e) {
  int rc = 0, ndims;
  hid_t fspace = H5I_INVALID_HID, mspace = H5I_INVALID_HID;
  hsize_t dims[H5S_MAX_RANK], start[H5S_MAX_RANK] = {0};
  H5TRY(fspace = H5Dget_space(dset));
  H5TRY(ndims = H5Sget_simple_extent_dims(fspace, dims, NULL));
  start[0] = row0;
  dims[0] = n ? n : 1;
  H5TRY(mspace = H5Screate_simple(ndims, dims, NULL));
  if (n == 0) {
    H5TRY(H5Sselect_none(fspace));
    H5TRY(H5Sselect_none(mspace));
  } else {
    H5TRY(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, dims, NULL));
  }
  if (writing)
    H5TRY(H5Dwrite(dset, memtype, mspace, fspace, dxpl, buf));
  else
    H5TRY(H5Dread(dset, memtype, mspace, fspace, dxpl, buf));
cleanup:
  h5_close(&mspace);
  h5_close(&fspace);
  return rc;
}

/* Tells a missing file from one that is not HDF5 (or truncated: a writer killed before closing). */
static int check_hdf5_file(const char *path, nn_error *e) {
  if (access(path, R_OK) != 0)
    return nn_fail(e, NN_EDATA, "%s: cannot open: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0)
    return nn_fail(e, NN_EDATA, "%s: not an HDF5 file (or truncated)", path);
  return 0;
}

static int attr_write(hid_t obj, const char *name, hid_t type, const void *value, const char *where,
                      nn_error *e) {
  int rc = 0;
  hid_t space = H5I_INVALID_HID, attr = H5I_INVALID_HID;
  H5TRY(space = H5Screate(H5S_SCALAR));
  H5TRY(attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT));
  H5TRY(H5Awrite(attr, type, value));
cleanup:
  h5_close(&attr);
  h5_close(&space);
  return rc;
}

/* 1 with *value set when obj has a one-element integer attribute `name`, 0 when it has none. */
static int attr_read_int(hid_t obj, const char *name, long long *value, const char *where,
                         nn_error *e) {
  int rc = 0;
  htri_t has;
  hid_t attr = H5I_INVALID_HID, type = H5I_INVALID_HID, space = H5I_INVALID_HID;
  hssize_t npoints;
  H5TRY(has = H5Aexists(obj, name));
  if (!has) return 0;
  H5TRY(attr = H5Aopen(obj, name, H5P_DEFAULT));
  H5TRY(type = H5Aget_type(attr));
  H5TRY(space = H5Aget_space(attr));
  H5TRY(npoints = H5Sget_simple_extent_npoints(space));
  if (H5Tget_class(type) != H5T_INTEGER || npoints != 1) {
    rc = nn_fail(e, NN_EDATA, "%s: attribute '%s' is not one integer", where, name);
    goto cleanup;
  }
  H5TRY(H5Aread(attr, H5T_NATIVE_LLONG, value));
  rc = 1;
cleanup:
  h5_close(&space);
  h5_close(&type);
  h5_close(&attr);
  return rc;
}

/* ---- the output file: X, y, attributes, written under a temporary name ----------------- */

typedef struct h5out {
  hid_t file, X, y, dxpl;
  int parallel;     /* opened collectively on MPI_COMM_WORLD; every call below is collective */
  int labels;       /* y holds int32 labels (else float32 targets) */
  const char *path; /* final name, also the name in messages */
  char *tmp;        /* written here; renamed to path only when everything succeeded */
} h5out;

static void out_init(h5out *o) {
  o->file = o->X = o->y = o->dxpl = H5I_INVALID_HID;
  o->parallel = o->labels = 0;
  o->path = NULL;
  o->tmp = NULL;
}

/* A dataset of n_rows rows of `width` elements (1-D when ndims is 1), chunked by ~1 MiB of
 * whole rows. Fill values are never written: every row gets written anyway. */
static int make_rows_dataset(hid_t file, const char *name, hid_t type, int ndims, uint64_t n_rows,
                             uint64_t width, hid_t *dset, const char *where, nn_error *e) {
  int rc = 0;
  hid_t space = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
  hsize_t dims[2] = {n_rows, width}, chunk[2] = {0, width};
  chunk[0] = MIB / (width * H5Tget_size(type));
  chunk[0] = chunk[0] ? min_u64(chunk[0], n_rows) : 1;
  H5TRY(space = H5Screate_simple(ndims, dims, NULL));
  H5TRY(dcpl = H5Pcreate(H5P_DATASET_CREATE));
  H5TRY(H5Pset_chunk(dcpl, ndims, chunk));
  H5TRY(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER));
  H5TRY(*dset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT));
cleanup:
  h5_close(&dcpl);
  h5_close(&space);
  return rc;
}

/* Creates X (N, F) and y: int32 (N,) when T is 0, float32 (N, T) otherwise. With `parallel`
 * it is collective and all arguments must be the same on every rank. Always follow with
 * out_close, also after a failure. */
static int out_create(h5out *o, const char *path, uint64_t N, uint64_t F, uint64_t T, int parallel,
                      nn_error *e) {
  int rc = 0;
  const char *where = path;
  hid_t fapl = H5I_INVALID_HID, str = H5I_INVALID_HID;
  long pid = (long)getpid();
  size_t len = strlen(path) + 32;
  o->path = path;
  o->parallel = parallel;
  o->labels = T == 0;
  if (parallel) MPI_Bcast(&pid, 1, MPI_LONG, 0, MPI_COMM_WORLD); /* one name for all ranks */
  if (!(o->tmp = xalloc(len, 1, path, e))) return NN_ENOMEM;
  snprintf(o->tmp, len, "%s.tmp.%ld", path, pid);

  H5TRY(fapl = H5Pcreate(H5P_FILE_ACCESS));
  if (parallel) H5TRY(H5Pset_fapl_mpio(fapl, MPI_COMM_WORLD, MPI_INFO_NULL));
  if ((o->file = H5Fcreate(o->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0) {
    rc = nn_fail(e, NN_EIO, "%s: cannot create %s (is its directory there and writable?)", path,
                 o->tmp);
    goto cleanup;
  }
  H5TRY(o->dxpl = H5Pcreate(H5P_DATASET_XFER));
  if (parallel) H5TRY(H5Pset_dxpl_mpio(o->dxpl, H5FD_MPIO_COLLECTIVE));
  if ((rc = make_rows_dataset(o->file, "X", H5T_IEEE_F32LE, 2, N, F, &o->X, where, e)))
    goto cleanup;
  if (o->labels)
    rc = make_rows_dataset(o->file, "y", H5T_STD_I32LE, 1, N, 1, &o->y, where, e);
  else
    rc = make_rows_dataset(o->file, "y", H5T_IEEE_F32LE, 2, N, T, &o->y, where, e);
  if (rc) goto cleanup;
  H5TRY(str = H5Tcopy(H5T_C_S1));
  H5TRY(H5Tset_size(str, strlen(FORMAT_NAME) + 1));
  H5TRY(H5Tset_strpad(str, H5T_STR_NULLTERM));
  rc = attr_write(o->file, "format", str, FORMAT_NAME, where, e);
cleanup:
  h5_close(&str);
  h5_close(&fapl);
  return rc;
}

/* Writes rows [row0, row0 + n): X (n, F) and y (n,) int32 or (n, T) float32. Collective when
 * the file is parallel (n may be 0 then). */
static int out_write(h5out *o, uint64_t row0, uint64_t n, const float *X, const void *y,
                     nn_error *e) {
  int rc = h5_rows(o->X, H5T_NATIVE_FLOAT, o->dxpl, 1, row0, n, (void *)X, o->path, e);
  if (rc) return rc;
  return h5_rows(o->y, o->labels ? H5T_NATIVE_INT32 : H5T_NATIVE_FLOAT, o->dxpl, 1, row0, n,
                 (void *)y, o->path, e);
}

static int out_set_classes(h5out *o, int classes, nn_error *e) {
  return attr_write(o->y, "classes", H5T_NATIVE_INT, &classes, o->path, e);
}

/* Closes the file and renames it into place when ok (on every rank, with `parallel`), else
 * removes it. Collective with `parallel`. */
static int out_close(h5out *o, int ok, nn_error *e) {
  int rc = 0;
  h5_close(&o->X);
  h5_close(&o->y);
  h5_close(&o->dxpl);
  if (o->file >= 0 && H5Fclose(o->file) < 0) {
    rc = nn_fail(e, NN_EIO, "%s: H5Fclose failed", o->path);
    ok = 0;
  }
  o->file = H5I_INVALID_HID;
  if (o->parallel) ok = all_ok(ok ? 0 : -1);
  if (o->tmp && (!o->parallel || g_rank == 0)) {
    if (!ok) {
      remove(o->tmp);
    } else if (rename(o->tmp, o->path) != 0) {
      rc = nn_fail(e, NN_EIO, "%s: cannot rename %s into place: %s", o->path, o->tmp,
                   strerror(errno));
      remove(o->tmp);
    }
  }
  free(o->tmp);
  o->tmp = NULL;
  return rc;
}

/* ---- the input file (split) ------------------------------------------------------------ */

typedef struct h5in {
  hid_t file, X, y;
  uint64_t N, F, T; /* T = 0: y holds int32 labels */
  int classes;
  const char *path;
} h5in;

static void in_close(h5in *in) {
  h5_close(&in->y);
  h5_close(&in->X);
  h5_close(&in->file);
}

/* Opens a file of the trainer's layout and checks the types, so that reading into float32
 * and int32 never converts silently (float64 1e300 would become inf). */
static int in_open(h5in *in, const char *path, nn_error *e) {
  int rc = 0;
  const char *where = path;
  dsinfo dx, dy;
  char t[32];
  long long classes = 0;
  in->path = path;
  in->file = in->X = in->y = H5I_INVALID_HID;
  in->classes = 0;
  if ((rc = check_hdf5_file(path, e))) return rc;
  H5TRY(in->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT));
  if (H5Lexists(in->file, "X", H5P_DEFAULT) <= 0 || H5Lexists(in->file, "y", H5P_DEFAULT) <= 0)
    return nn_fail(e, NN_EDATA, "%s: needs datasets X and y", path);
  H5TRY(in->X = H5Dopen2(in->file, "X", H5P_DEFAULT));
  H5TRY(in->y = H5Dopen2(in->file, "y", H5P_DEFAULT));
  if ((rc = ds_info(in->X, &dx, where, e)) || (rc = ds_info(in->y, &dy, where, e))) goto cleanup;
  if (dx.ndims != 2 || dx.cls != H5T_FLOAT || dx.size != 4 || dx.dims[0] == 0)
    return nn_fail(e, NN_EDATA, "%s: X must be float32 (N, F) with N > 0, found %s of %d dims",
                   path, type_name(&dx, t, sizeof t), dx.ndims);
  in->N = dx.dims[0];
  in->F = dx.dims[1];
  if (dy.ndims < 1 || dy.dims[0] != in->N)
    return nn_fail(e, NN_EDATA, "%s: y must have as many rows as X (%" PRIu64 ")", path, in->N);
  if (dy.cls == H5T_INTEGER && dy.ndims == 1 && (dy.size < 4 || (dy.size == 4 && dy.is_signed))) {
    in->T = 0;
    if ((rc = attr_read_int(in->y, "classes", &classes, where, e)) < 0) goto cleanup;
    if (rc == 0 || classes < 1 || classes > INT_MAX)
      return nn_fail(e, NN_EDATA, "%s: y needs a positive integer attribute 'classes'", path);
    in->classes = (int)classes;
    rc = 0;
  } else if (dy.cls == H5T_FLOAT && dy.size == 4 && dy.ndims <= 2) {
    in->T = row_width(&dy);
  } else {
    return nn_fail(e, NN_EDATA, "%s: y must be int32 (N,) or float32 (N, T), found %s of %d dims",
                   path, type_name(&dy, t, sizeof t), dy.ndims);
  }
cleanup:
  return rc;
}

static int in_read(h5in *in, uint64_t row0, uint64_t n, float *X, void *y, nn_error *e) {
  int rc = h5_rows(in->X, H5T_NATIVE_FLOAT, H5P_DEFAULT, 0, row0, n, X, in->path, e);
  if (rc) return rc;
  return h5_rows(in->y, in->T ? H5T_NATIVE_FLOAT : H5T_NATIVE_INT32, H5P_DEFAULT, 0, row0, n, y,
                 in->path, e);
}

/* ---- gzip-or-plain input --------------------------------------------------------------- */

static int gz_open(gzFile *gz, const char *path, nn_error *e) {
  errno = 0;
  *gz = gzopen(path, "rb");
  if (!*gz)
    return nn_fail(e, NN_EDATA, "%s: cannot open: %s", path, errno ? strerror(errno) : "no memory");
  gzbuffer(*gz, 1 << 20);
  return 0;
}

/* Reads up to n bytes; *got < n means the file ended (a cut gzip stream counts as ended). */
static int gz_read(gzFile gz, void *buf, uint64_t n, uint64_t *got, const char *path, nn_error *e) {
  *got = 0;
  while (*got < n) {
    unsigned want = (unsigned)min_u64(n - *got, 1u << 30);
    int r = gzread(gz, (char *)buf + *got, want);
    if (r < 0) {
      int errnum = 0;
      const char *msg = gzerror(gz, &errnum);
      if (errnum == Z_BUF_ERROR) return 0; /* truncated stream: the caller says what is missing */
      return nn_fail(e, NN_EDATA, "%s: read error: %s", path,
                     errnum == Z_ERRNO ? strerror(errno) : msg);
    }
    if (r == 0) break;
    *got += (uint64_t)r;
  }
  return 0;
}

/* Fails when the file holds more than its header announced: a sign of a wrong header. */
static int gz_expect_end(gzFile gz, const char *path, uint64_t n, const char *items, nn_error *e) {
  unsigned char c;
  uint64_t got = 0;
  int rc = gz_read(gz, &c, 1, &got, path, e);
  if (rc == 0 && got)
    rc = nn_fail(e, NN_EDATA, "%s: trailing data after the %" PRIu64 " %s its header announces",
                 path, n, items);
  return rc;
}

/* ---- import-idx ------------------------------------------------------------------------ */

/* Opens an IDX file and reads its header: magic number, then big-endian 32-bit dimensions. */
static int idx_open(gzFile *gz, const char *path, uint32_t magic, int ndims, uint32_t *dims,
                    nn_error *e) {
  unsigned char hdr[16];
  uint64_t need = 4 + 4 * (uint64_t)ndims, got = 0;
  int rc = gz_open(gz, path, e);
  if (rc || (rc = gz_read(*gz, hdr, need, &got, path, e))) return rc;
  if (got < need) return nn_fail(e, NN_EDATA, "%s: too short for an IDX header", path);
  for (int i = 0; i <= ndims; i++)
    dims[i] = (uint32_t)hdr[4 * i] << 24 | (uint32_t)hdr[4 * i + 1] << 16 |
              (uint32_t)hdr[4 * i + 2] << 8 | hdr[4 * i + 3];
  if (dims[0] != magic)
    return nn_fail(e, NN_EDATA, "%s: bad IDX magic 0x%08x (expected 0x%08x, unsigned-byte %s)",
                   path, dims[0], magic, ndims == 3 ? "images" : "labels");
  memmove(dims, dims + 1, (size_t)ndims * sizeof *dims); /* drop the magic */
  return 0;
}

static int cmd_import_idx(int argc, char **argv, nn_error *e) {
  const char *pos[3] = {NULL}, *cmd = "import-idx";
  gzFile gi = NULL, gl = NULL;
  uint32_t di[4] = {0}, dl[2] = {0};
  uint8_t *labels = NULL, *pix = NULL;
  float *X = NULL;
  int32_t *y = NULL;
  uint64_t N = 0, F = 0, rows, got = 0, done = 0;
  int rc, classes, max_label = 0;
  progress p;
  h5out out;
  out_init(&out);
  progress_start(&p, cmd);
  if ((rc = parse_args(cmd, argc, argv, NULL, 0, pos, 3, e))) return rc;
  const char *img_path = pos[0], *lab_path = pos[1];
  if ((rc = idx_open(&gi, img_path, 0x00000803, 3, di, e)) ||
      (rc = idx_open(&gl, lab_path, 0x00000801, 1, dl, e)))
    goto cleanup;
  N = di[0];
  F = (uint64_t)di[1] * di[2];
  if (N != dl[0]) {
    rc = nn_fail(e, NN_EDATA, "%s: holds %" PRIu64 " images but %s holds %u labels", img_path, N,
                 lab_path, dl[0]);
    goto cleanup;
  }
  if (N == 0 || F == 0) {
    rc = nn_fail(e, NN_EDATA, "%s: empty: %" PRIu64 " images of %ux%u", img_path, N, di[1], di[2]);
    goto cleanup;
  }

  /* Labels first (one byte each): the class count is known before any image is written. */
  if (!(labels = xalloc(N, 1, lab_path, e))) {
    rc = NN_ENOMEM;
    goto cleanup;
  }
  if ((rc = gz_read(gl, labels, N, &got, lab_path, e))) goto cleanup;
  if (got < N) {
    rc = nn_fail(e, NN_EDATA,
                 "%s: truncated: header announces %" PRIu64 " labels, file holds %" PRIu64,
                 lab_path, N, got);
    goto cleanup;
  }
  if ((rc = gz_expect_end(gl, lab_path, N, "labels", e))) goto cleanup;
  for (uint64_t i = 0; i < N; i++)
    if (labels[i] > max_label) max_label = labels[i];
  classes = max_label < 10 ? 10 : max_label + 1; /* digits: 10 even if a subset lacks a 9 */

  rows = block_rows(F * 5 + 4);
  if (!(pix = xalloc(rows, F, img_path, e)) || !(X = xalloc(rows * F, sizeof *X, img_path, e)) ||
      !(y = xalloc(rows, sizeof *y, img_path, e))) {
    rc = NN_ENOMEM;
    goto cleanup;
  }
  if ((rc = out_create(&out, pos[2], N, F, 0, 0, e))) goto cleanup;
  for (uint64_t r0 = 0; r0 < N; r0 += rows) {
    uint64_t n = min_u64(rows, N - r0);
    if ((rc = gz_read(gi, pix, n * F, &got, img_path, e))) goto cleanup;
    if (got < n * F) {
      rc = nn_fail(e, NN_EDATA,
                   "%s: truncated: header announces %" PRIu64
                   " images of %ux%u, file ends in image %" PRIu64,
                   img_path, N, di[1], di[2], r0 + got / F);
      goto cleanup;
    }
    for (uint64_t i = 0; i < n * F; i++) X[i] = pix[i] / 255.0f;
    for (uint64_t i = 0; i < n; i++) y[i] = labels[r0 + i];
    if ((rc = out_write(&out, r0, n, X, y, e))) goto cleanup;
    done += n;
    progress_update(&p, (double)done, (double)N);
  }
  if ((rc = gz_expect_end(gi, img_path, N, "images", e))) goto cleanup;
  rc = out_set_classes(&out, classes, e);
cleanup:
  if (out.tmp) {
    int rc2 = out_close(&out, rc == 0, e);
    if (!rc) rc = rc2;
  }
  progress_end(&p, rc == 0, (double)N * (F + 1) * 4);
  if (gi) gzclose(gi);
  if (gl) gzclose(gl);
  free(labels);
  free(pix);
  free(X);
  free(y);
  return rc;
}

/* ---- import-csv ------------------------------------------------------------------------ */

/* Reads one line of any length without its "\n" or "\r\n". Returns 1, or 0 at end of file. */
static int gz_getline(gzFile gz, char **buf, size_t *cap, const char *path, nn_error *e) {
  size_t len = 0;
  for (;;) {
    if (*cap - len < 2) {
      size_t ncap = *cap ? 2 * *cap : 4096;
      char *nb = realloc(*buf, ncap);
      if (!nb) return nn_fail(e, NN_ENOMEM, "%s: out of memory for a line", path);
      *buf = nb;
      *cap = ncap;
    }
    if (!gzgets(gz, *buf + len, (int)min_u64(*cap - len, INT_MAX))) {
      int errnum = 0;
      const char *msg = gzerror(gz, &errnum);
      if (errnum != Z_OK && errnum != Z_BUF_ERROR)
        return nn_fail(e, NN_EDATA, "%s: read error: %s", path, msg);
      break;
    }
    len += strlen(*buf + len);
    if (len && (*buf)[len - 1] == '\n') break;
  }
  if (len == 0) return 0;
  while (len && ((*buf)[len - 1] == '\n' || (*buf)[len - 1] == '\r')) (*buf)[--len] = '\0';
  return 1;
}

static int blank(const char *s) {
  while (isspace((unsigned char)*s)) s++;
  return *s == '\0';
}

static uint64_t count_fields(const char *s) {
  uint64_t n = 1;
  for (; *s; s++) n += *s == ',';
  return n;
}

/* Parses one CSV row of n_fields numbers into x (the features) and *label (column label_col,
 * an integer class >= 0). The line is modified. */
static int parse_csv_row(char *line, uint64_t n_fields, uint64_t label_col, float *x,
                         int32_t *label, const char *path, uint64_t lineno, nn_error *e) {
  uint64_t k = 0, found = count_fields(line);
  char *s = line;
  if (found != n_fields)
    return nn_fail(e, NN_EDATA, "%s:%" PRIu64 ": %" PRIu64 " fields, expected %" PRIu64, path,
                   lineno, found, n_fields);
  for (uint64_t f = 0; f < n_fields; f++) {
    char *comma = strchr(s, ','), *end = NULL;
    if (comma) *comma = '\0';
    double v = strtod(s, &end);
    if (end == s || !blank(end))
      return nn_fail(e, NN_EDATA, "%s:%" PRIu64 ": field %" PRIu64 " ('%.40s') is not a number%s",
                     path, lineno, f, s, lineno == 1 ? " (a header line needs --header)" : "");
    if (f == label_col) {
      if (!(v >= 0 && v < INT32_MAX) || v != floor(v))
        return nn_fail(e, NN_EDATA, "%s:%" PRIu64 ": label '%.40s' is not a class number >= 0",
                       path, lineno, s);
      *label = (int32_t)v;
    } else {
      x[k++] = (float)v;
    }
    s = comma ? comma + 1 : s;
  }
  return 0;
}

/* Two passes over the file: the first checks every row and counts them, so the output can be
 * created with its final shape; the second parses again and writes by blocks. */
static int cmd_import_csv(int argc, char **argv, nn_error *e) {
  const char *pos[2] = {NULL}, *cmd = "import-csv";
  opt opts[] = {{"label-column", 1, NULL}, {"header", 0, NULL}};
  gzFile gz = NULL;
  char *line = NULL;
  size_t cap = 0;
  float *X = NULL;
  int32_t *y = NULL;
  uint64_t n_fields = 0, label_col = 0, N = 0, F = 0, rows = 0, lineno = 0, filled = 0, done = 0;
  int64_t col = 0;
  int rc, max_label = 0, pass;
  double file_bytes = 1;
  struct stat st;
  progress p;
  h5out out;
  out_init(&out);
  progress_start(&p, cmd);
  if ((rc = parse_args(cmd, argc, argv, opts, 2, pos, 2, e)) ||
      (rc = parse_int(cmd, &opts[0], 1, -1, INT32_MAX, &col, e)))
    return rc;
  const char *path = pos[0];
  if (stat(path, &st) == 0 && st.st_size > 0) file_bytes = (double)st.st_size;
  if ((rc = gz_open(&gz, path, e))) goto cleanup;

  for (pass = 0; pass < 2; pass++) {
    lineno = 0;
    if (opts[1].value && (rc = gz_getline(gz, &line, &cap, path, e)) >= 0) {
      lineno = 1; /* the header */
      rc = 0;
    }
    if (rc < 0) goto cleanup;
    while ((rc = gz_getline(gz, &line, &cap, path, e)) == 1) {
      lineno++;
      if (blank(line)) continue;
      if (pass == 1 && done == N) break; /* more rows than in the first pass: caught below */
      if (n_fields == 0) {               /* the first data row fixes the width */
        n_fields = count_fields(line);
        label_col = col < 0 ? n_fields - 1 : (uint64_t)col;
        F = n_fields - 1;
        if (n_fields < 2 || label_col >= n_fields) {
          rc = nn_fail(e, NN_EDATA,
                       "%s:%" PRIu64 ": %" PRIu64 " fields: need a label column %" PRId64
                       " and at least one feature",
                       path, lineno, n_fields, col);
          goto cleanup;
        }
        rows = block_rows(n_fields * 4);
        if (!(X = xalloc(rows * F, sizeof *X, path, e)) ||
            !(y = xalloc(rows, sizeof *y, path, e))) {
          rc = NN_ENOMEM;
          goto cleanup;
        }
      }
      if ((rc = parse_csv_row(line, n_fields, label_col, X + filled * F, y + filled, path, lineno,
                              e)))
        goto cleanup;
      if (pass == 0) {
        N++;
        if (y[0] > max_label) max_label = y[0];
      } else if (++filled == rows || done + filled == N) {
        if ((rc = out_write(&out, done, filled, X, y, e))) goto cleanup;
        done += filled;
        filled = 0;
      }
      if ((lineno & 1023) == 0)
        progress_update(&p, (double)gzoffset(gz) + pass * file_bytes, 2 * file_bytes);
    }
    if (rc < 0) goto cleanup;
    if (pass == 0) {
      if (N == 0) {
        rc = nn_fail(e, NN_EDATA, "%s: no data rows", path);
        goto cleanup;
      }
      if ((rc = out_create(&out, pos[1], N, F, 0, 0, e)) ||
          (rc = out_set_classes(&out, max_label + 1, e)))
        goto cleanup;
      if (gzrewind(gz) != 0) {
        rc = nn_fail(e, NN_EIO, "%s: cannot rewind for the second pass", path);
        goto cleanup;
      }
    }
  }
  if (done != N || rc == 1) rc = nn_fail(e, NN_EDATA, "%s: changed while being read", path);
cleanup:
  if (out.tmp) {
    int rc2 = out_close(&out, rc == 0, e);
    if (!rc) rc = rc2;
  }
  progress_end(&p, rc == 0, (double)N * (F + 1) * 4);
  if (gz) gzclose(gz);
  free(line);
  free(X);
  free(y);
  return rc;
}

/* ---- synth ----------------------------------------------------------------------------- */

/* A fixed random network F -> H tanh -> K that labels the synthetic rows. */
typedef struct teacher {
  uint64_t F, K;
  float *W1t; /* (F, H): transposed so one input feeds all hidden units with unit stride */
  float *b1;  /* (H) */
  float *W2;  /* (K, H) */
  float *b2;  /* (K) */
} teacher;

static int teacher_init(teacher *t, uint64_t seed, uint64_t F, uint64_t K, nn_error *e) {
  const uint64_t H = SYNTH_HIDDEN;
  nn_rng r;
  t->F = F;
  t->K = K;
  t->W1t = xalloc(F * H + H + K * H + K, sizeof(float), "synth teacher", e);
  if (!t->W1t) return NN_ENOMEM;
  t->b1 = t->W1t + F * H;
  t->W2 = t->b1 + H;
  t->b2 = t->W2 + K * H;
  /* Row keys are (seed, row, 0); c = 1 keeps the teacher's stream apart from every row's. */
  nn_rng_init(&r, nn_rng_key(seed, UINT64_MAX, 1));
  /* Pre-activations of std ~1.5: tanh is clearly non-linear but rarely saturated. */
  for (uint64_t i = 0; i < F * H; i++)
    t->W1t[i] = (float)(1.5 * nn_rng_normal(&r) / sqrt((double)F));
  for (uint64_t j = 0; j < H; j++) t->b1[j] = (float)(0.5 * nn_rng_normal(&r));
  for (uint64_t i = 0; i < K * H; i++) t->W2[i] = (float)(nn_rng_normal(&r) / sqrt((double)H));
  for (uint64_t k = 0; k < K; k++) t->b2[k] = 0.0f;
  return 0;
}

/* Row `row` of the data set, a function of (seed, row) only, so any rank count writes the same
 * file. x: (F); label for classification, else target: (K). */
static void synth_row(const teacher *t, uint64_t seed, uint64_t row, int normal, double noise,
                      float *x, int32_t *label, float *target) {
  float h[SYNTH_HIDDEN], best = 0.0f;
  nn_rng r;
  nn_rng_init(&r, nn_rng_key(seed, row, 0));
  memcpy(h, t->b1, sizeof h);
  for (uint64_t i = 0; i < t->F; i++) {
    float z;
    if (normal) {
      x[i] = z = (float)nn_rng_normal(&r);
    } else {
      x[i] = (float)(nn_rng_u64(&r) >> 40) * 0x1.0p-24f; /* exact, never rounds up to 1 */
      z = (x[i] - 0.5f) * 3.4641016f;                    /* unit variance for the teacher */
    }
    const float *w = t->W1t + i * SYNTH_HIDDEN;
    for (int j = 0; j < SYNTH_HIDDEN; j++) h[j] += w[j] * z;
  }
  for (int j = 0; j < SYNTH_HIDDEN; j++) h[j] = tanhf(h[j]);
  for (uint64_t k = 0; k < t->K; k++) {
    const float *w = t->W2 + k * SYNTH_HIDDEN;
    float o = t->b2[k];
    for (int j = 0; j < SYNTH_HIDDEN; j++) o += w[j] * h[j];
    o += (float)(noise * nn_rng_normal(&r));
    if (target) {
      target[k] = o;
    } else if (k == 0 || o > best) {
      best = o;
      *label = (int32_t)k;
    }
  }
}

/* Collective: every rank generates and writes its own contiguous rows. */
static int cmd_synth(int argc, char **argv, nn_error *e) {
  const char *pos[1] = {NULL}, *cmd = "synth";
  opt opts[] = {{"samples", 1, NULL}, {"features", 1, NULL}, {"classes", 1, NULL},
                {"targets", 1, NULL}, {"seed", 1, NULL},     {"noise", 1, NULL},
                {"normal", 0, NULL}};
  int64_t N = 0, F = 0, C = 0, T = 0;
  uint64_t seed = 1, K, lo, hi, rows, iters, base, rem;
  double noise = 0.1;
  teacher t = {0};
  float *X = NULL, *Y = NULL;
  int32_t *y = NULL;
  int rc, created = 0;
  progress p;
  h5out out;
  out_init(&out);
  progress_start(&p, cmd);
  if ((rc = parse_args(cmd, argc, argv, opts, 7, pos, 1, e)) ||
      (rc = parse_int(cmd, &opts[0], 1, 1, INT64_C(1) << 40, &N, e)) ||
      (rc = parse_int(cmd, &opts[1], 1, 1, INT64_C(1) << 24, &F, e)) ||
      (rc = parse_int(cmd, &opts[2], 0, 2, INT64_C(1) << 20, &C, e)) ||
      (rc = parse_int(cmd, &opts[3], 0, 1, INT64_C(1) << 16, &T, e)) ||
      (rc = parse_seed(cmd, &opts[4], &seed, e)) ||
      (rc = parse_real(cmd, &opts[5], 0, 0.0, 1e6, &noise, e)))
    return rc;
  if ((C == 0) == (T == 0))
    return nn_fail(e, NN_ECONFIG, "%s: give exactly one of --classes and --targets", cmd);
  K = C ? (uint64_t)C : (uint64_t)T;
  if ((uint64_t)N > (UINT64_MAX / 8) / ((uint64_t)F + K))
    return nn_fail(e, NN_ECONFIG, "%s: %" PRId64 " x %" PRId64 " is too large", cmd, N, F);

  /* Balanced contiguous blocks; every rank makes the same number of collective writes. */
  base = (uint64_t)N / (uint64_t)g_nranks;
  rem = (uint64_t)N % (uint64_t)g_nranks;
  lo = (uint64_t)g_rank * base + min_u64((uint64_t)g_rank, rem);
  hi = lo + base + ((uint64_t)g_rank < rem);
  rows = min_u64(block_rows(((uint64_t)F + (T ? K : 1)) * 4), base + (rem > 0));
  iters = (base + (rem > 0) + rows - 1) / rows;

  if (!(rc = teacher_init(&t, seed, (uint64_t)F, K, e))) {
    if (!(X = xalloc(rows * (uint64_t)F, sizeof *X, pos[0], e)) ||
        !(T ? (void *)(Y = xalloc(rows * K, sizeof *Y, pos[0], e))
            : (void *)(y = xalloc(rows, sizeof *y, pos[0], e))))
      rc = NN_ENOMEM;
  }
  if (!all_ok(rc)) goto cleanup;
  created = 1;
  rc = out_create(&out, pos[0], (uint64_t)N, (uint64_t)F, (uint64_t)T, 1, e);
  if (!rc && C) rc = out_set_classes(&out, (int)C, e);
  if (!all_ok(rc)) goto cleanup;
  for (uint64_t it = 0; it < iters; it++) {
    uint64_t r0 = lo + it * rows, n = r0 < hi ? min_u64(rows, hi - r0) : 0;
    for (uint64_t i = 0; i < n; i++)
      synth_row(&t, seed, r0 + i, opts[6].value != NULL, noise, X + i * (uint64_t)F,
                y ? y + i : NULL, Y ? Y + i * K : NULL);
    rc = out_write(&out, r0, n, X, y ? (void *)y : (void *)Y, e);
    if (!all_ok(rc)) goto cleanup; /* the failing rank's message is the one shown */
    progress_update(&p, (double)(it + 1), (double)iters);
  }
cleanup:
  if (created) {
    int rc2 = out_close(&out, rc == 0, e);
    if (!rc) rc = rc2;
  }
  progress_end(&p, all_ok(rc), (double)N * ((uint64_t)F + (T ? K : 1)) * 4);
  free(t.W1t);
  free(X);
  free(Y);
  free(y);
  return rc;
}

/* ---- inspect --------------------------------------------------------------------------- */

typedef struct fstats {
  double min, max; /* over finite values */
  uint64_t n, nan, inf;
} fstats;

/* Streams a numeric dataset as doubles. */
static int scan_float(hid_t dset, const dsinfo *d, fstats *s, progress *p, const char *where,
                      nn_error *e) {
  uint64_t w = row_width(d), rows = block_rows(w * sizeof(double)), N = d->dims[0];
  double *buf = xalloc(rows * w, sizeof *buf, where, e);
  int rc = buf ? 0 : NN_ENOMEM;
  s->min = INFINITY;
  s->max = -INFINITY;
  s->n = s->nan = s->inf = 0;
  for (uint64_t r0 = 0; !rc && r0 < N; r0 += rows) {
    uint64_t n = min_u64(rows, N - r0);
    if ((rc = h5_rows(dset, H5T_NATIVE_DOUBLE, H5P_DEFAULT, 0, r0, n, buf, where, e))) break;
    for (uint64_t i = 0; i < n * w; i++) {
      double v = buf[i];
      if (isnan(v))
        s->nan++;
      else if (isinf(v))
        s->inf++;
      else {
        if (v < s->min) s->min = v;
        if (v > s->max) s->max = v;
      }
    }
    s->n += n * w;
    progress_update(p, (double)(r0 + n), (double)N);
  }
  free(buf);
  return rc;
}

/* Streams integer labels into a histogram of *n_hist bins (grown as needed up to `limit`
 * classes); labels outside [0, limit) are counted in *out_of_range. */
static int scan_labels(hid_t dset, const dsinfo *d, uint64_t limit, uint64_t **hist,
                       uint64_t *n_hist, uint64_t *out_of_range, const char *where, nn_error *e) {
  uint64_t rows = block_rows(sizeof(long long)), N = d->dims[0];
  long long *buf = xalloc(rows, sizeof *buf, where, e);
  int rc = buf ? 0 : NN_ENOMEM;
  *out_of_range = 0;
  for (uint64_t r0 = 0; !rc && r0 < N; r0 += rows) {
    uint64_t n = min_u64(rows, N - r0);
    if ((rc = h5_rows(dset, H5T_NATIVE_LLONG, H5P_DEFAULT, 0, r0, n, buf, where, e))) break;
    for (uint64_t i = 0; i < n; i++) {
      long long v = buf[i];
      if (v < 0 || (uint64_t)v >= limit) {
        (*out_of_range)++;
        continue;
      }
      if ((uint64_t)v >= *n_hist) {
        uint64_t nn = (uint64_t)v + 1;
        uint64_t *h = realloc(*hist, nn * sizeof *h);
        if (!h) {
          rc = nn_fail(e, NN_ENOMEM, "%s: out of memory for the histogram", where);
          break;
        }
        memset(h + *n_hist, 0, (nn - *n_hist) * sizeof *h);
        *hist = h;
        *n_hist = nn;
      }
      (*hist)[v]++;
    }
  }
  free(buf);
  return rc;
}

typedef struct describe_ctx {
  const char *path;
  nn_error *e;
} describe_ctx;

/* Prints one line per root object: shape, type, chunking, filters. */
static herr_t describe_cb(hid_t file, const char *name, const H5L_info_t *info, void *arg) {
  describe_ctx *ctx = arg;
  nn_error *e = ctx->e;
  const char *where = ctx->path;
  int rc = 0, nf;
  hid_t obj = H5I_INVALID_HID, dcpl = H5I_INVALID_HID;
  dsinfo d;
  char t[32], shape[256], chunks[256] = "contiguous";
  hsize_t cdims[H5S_MAX_RANK];
  (void)info;
  H5TRY(obj = H5Oopen(file, name, H5P_DEFAULT));
  if (H5Iget_type(obj) != H5I_DATASET) {
    printf("%s %s\n", H5Iget_type(obj) == H5I_GROUP ? "group" : "object", name);
    goto cleanup;
  }
  if ((rc = ds_info(obj, &d, where, e))) goto cleanup;
  H5TRY(dcpl = H5Dget_create_plist(obj));
  if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
    int nd;
    H5TRY(nd = H5Pget_chunk(dcpl, H5S_MAX_RANK, cdims));
    dims_str(nd, cdims, chunks + 7, sizeof chunks - 7);
    memcpy(chunks, "chunks ", 7);
  }
  printf("dataset %s: shape %s, %s, %s, filters:", name,
         dims_str(d.ndims, d.dims, shape, sizeof shape), type_name(&d, t, sizeof t), chunks);
  H5TRY(nf = H5Pget_nfilters(dcpl));
  for (int i = 0; i < nf; i++) {
    unsigned flags = 0, cfg = 0;
    size_t ncd = 0;
    char fname[64] = "";
    H5Z_filter_t id =
        H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, NULL, sizeof fname, fname, &cfg);
    printf(" %s%s", fname[0] ? fname : "unknown",
           H5Zfilter_avail(id) > 0 ? "" : " (not available)");
  }
  printf("%s\n", nf > 0 ? "" : " none");
cleanup:
  h5_close(&dcpl);
  h5_close(&obj);
  return rc < 0 ? -1 : 0;
}

/* Reads a string attribute (fixed or variable length) for display; "" when absent. */
static void attr_string(hid_t obj, const char *name, char *buf, size_t n) {
  hid_t attr = H5I_INVALID_HID, type = H5I_INVALID_HID, mem = H5I_INVALID_HID;
  buf[0] = '\0';
  if (H5Aexists(obj, name) <= 0 || (attr = H5Aopen(obj, name, H5P_DEFAULT)) < 0) return;
  if ((type = H5Aget_type(attr)) >= 0 && H5Tget_class(type) == H5T_STRING) {
    if (H5Tis_variable_str(type) > 0) {
      char *s = NULL;
      mem = H5Tcopy(H5T_C_S1);
      if (mem >= 0 && H5Tset_size(mem, H5T_VARIABLE) >= 0 && H5Aread(attr, mem, &s) >= 0 && s) {
        snprintf(buf, n, "%s", s);
        H5free_memory(s);
      }
    } else if (H5Tget_size(type) < n) {
      mem = H5Tcopy(type);
      if (mem >= 0 && H5Aread(attr, mem, buf) >= 0) buf[H5Tget_size(type)] = '\0';
    }
  }
  h5_close(&mem);
  h5_close(&type);
  h5_close(&attr);
}

static int cmd_inspect(int argc, char **argv, nn_error *e) {
  const char *pos[1] = {NULL}, *cmd = "inspect";
  hid_t file = H5I_INVALID_HID, X = H5I_INVALID_HID, y = H5I_INVALID_HID;
  dsinfo dx, dy;
  fstats sx = {0}, sy = {0};
  uint64_t *hist = NULL, n_hist = 0, bad_labels = 0;
  long long classes = 0;
  int rc, has_classes = 0;
  char fmt[64];
  describe_ctx ctx;
  progress p;
  progress_start(&p, cmd);
  if ((rc = parse_args(cmd, argc, argv, NULL, 0, pos, 1, e))) return rc;
  const char *where = pos[0];
  if ((rc = check_hdf5_file(where, e))) return rc;
  H5TRY(file = H5Fopen(where, H5F_ACC_RDONLY, H5P_DEFAULT));
  attr_string(file, "format", fmt, sizeof fmt);
  printf("file: %s\nformat: %s\n", where, fmt[0] ? fmt : "(no 'format' attribute)");
  ctx.path = where;
  ctx.e = e;
  H5TRY(H5Literate(file, H5_INDEX_NAME, H5_ITER_INC, NULL, describe_cb, &ctx));

  if (H5Lexists(file, "X", H5P_DEFAULT) <= 0 || H5Lexists(file, "y", H5P_DEFAULT) <= 0) {
    rc = nn_fail(e, NN_EDATA, "%s: needs datasets X and y", where);
    goto cleanup;
  }
  H5TRY(X = H5Dopen2(file, "X", H5P_DEFAULT));
  H5TRY(y = H5Dopen2(file, "y", H5P_DEFAULT));
  if ((rc = ds_info(X, &dx, where, e)) || (rc = ds_info(y, &dy, where, e))) goto cleanup;
  if (dx.ndims != 2 || dx.cls != H5T_FLOAT) {
    rc = nn_fail(e, NN_EDATA, "%s: X must be a 2-D float dataset", where);
    goto cleanup;
  }
  if ((rc = scan_float(X, &dx, &sx, &p, where, e))) goto cleanup;
  printf("X: min %.7g max %.7g nan %" PRIu64 " inf %" PRIu64 "\n", sx.min, sx.max, sx.nan, sx.inf);

  if (dy.ndims < 1 || dy.dims[0] != dx.dims[0]) {
    rc = nn_fail(e, NN_EDATA, "%s: y has not the %llu rows of X", where,
                 (unsigned long long)dx.dims[0]);
    goto cleanup;
  }
  if (dy.cls == H5T_INTEGER && dy.ndims == 1) {
    if ((has_classes = attr_read_int(y, "classes", &classes, where, e)) < 0) {
      rc = has_classes;
      goto cleanup;
    }
    /* Without the attribute, bins grow with the labels found, up to a sane bound. */
    if ((rc = scan_labels(y, &dy, has_classes && classes > 0 ? (uint64_t)classes : 1u << 20, &hist,
                          &n_hist, &bad_labels, where, e)))
      goto cleanup;
    printf("y: classes attribute %lld, histogram:\n", has_classes ? classes : -1LL);
    for (uint64_t c = 0; c < n_hist; c++) printf("  %" PRIu64 ": %" PRIu64 "\n", c, hist[c]);
    if (bad_labels) printf("  out of range: %" PRIu64 "\n", bad_labels);
    if (!has_classes || classes < 1)
      rc = nn_fail(e, NN_EDATA, "%s: y has no positive 'classes' attribute", where);
    else if (bad_labels)
      rc = nn_fail(e, NN_EDATA, "%s: %" PRIu64 " labels outside [0, %lld)", where, bad_labels,
                   classes);
  } else if (dy.cls == H5T_FLOAT) {
    if ((rc = scan_float(y, &dy, &sy, &p, where, e))) goto cleanup;
    printf("y: min %.7g max %.7g nan %" PRIu64 " inf %" PRIu64 "\n", sy.min, sy.max, sy.nan,
           sy.inf);
    if (sy.nan || sy.inf) rc = nn_fail(e, NN_EDATA, "%s: y holds NaN or Inf", where);
  } else {
    rc = nn_fail(e, NN_EDATA, "%s: y must be 1-D integer labels or float targets", where);
  }
  if (!rc && (sx.nan || sx.inf))
    rc = nn_fail(e, NN_EDATA, "%s: X holds %" PRIu64 " NaN and %" PRIu64 " Inf values", where,
                 sx.nan, sx.inf);
cleanup:
  fflush(stdout);
  progress_end(&p, rc == 0, (double)(sx.n + sy.n) * 4);
  h5_close(&y);
  h5_close(&X);
  h5_close(&file);
  free(hist);
  return rc;
}

/* ---- split ----------------------------------------------------------------------------- */

/* Selection sampling (Knuth's algorithm S): row i goes to TEST with probability
 * still_needed / rows_left, which gives exactly round(P * N) test rows, one pass, O(1) memory. */
static int cmd_split(int argc, char **argv, nn_error *e) {
  const char *pos[3] = {NULL}, *cmd = "split";
  opt opts[] = {{"test-fraction", 1, NULL}, {"seed", 1, NULL}};
  double frac = 0;
  uint64_t seed = 1, n_test, need, rows, w = 1, n_train = 0, n_tst = 0;
  float *X = NULL, *Xt = NULL;
  char *y = NULL, *yt = NULL; /* rows of w * 4 bytes: int32 labels or float32 targets */
  int rc, made = 0;
  nn_rng r;
  progress p;
  h5in in = {H5I_INVALID_HID, H5I_INVALID_HID, H5I_INVALID_HID, 0, 0, 0, 0, NULL};
  h5out tr, te;
  out_init(&tr);
  out_init(&te);
  progress_start(&p, cmd);
  if ((rc = parse_args(cmd, argc, argv, opts, 2, pos, 3, e)) ||
      (rc = parse_real(cmd, &opts[0], 1, 0.0, 1.0, &frac, e)) ||
      (rc = parse_seed(cmd, &opts[1], &seed, e)))
    return rc;
  if ((rc = in_open(&in, pos[0], e))) goto cleanup;
  n_test = (uint64_t)llround(frac * (double)in.N);
  if (n_test == 0 || n_test >= in.N) {
    rc = nn_fail(e, NN_ECONFIG, "%s: --test-fraction %g of %" PRIu64 " rows leaves a part empty",
                 cmd, frac, in.N);
    goto cleanup;
  }
  w = in.T ? in.T : 1;
  rows = block_rows((in.F + w) * 4);
  if (!(X = xalloc(rows * in.F, sizeof *X, pos[0], e)) ||
      !(Xt = xalloc(rows * in.F, sizeof *Xt, pos[0], e)) || !(y = xalloc(rows * w, 4, pos[0], e)) ||
      !(yt = xalloc(rows * w, 4, pos[0], e))) {
    rc = NN_ENOMEM;
    goto cleanup;
  }
  made = 1;
  if ((rc = out_create(&tr, pos[1], in.N - n_test, in.F, in.T, 0, e)) ||
      (rc = out_create(&te, pos[2], n_test, in.F, in.T, 0, e)))
    goto cleanup;
  if (!in.T &&
      ((rc = out_set_classes(&tr, in.classes, e)) || (rc = out_set_classes(&te, in.classes, e))))
    goto cleanup;

  nn_rng_init(&r, nn_rng_key(seed, 0x73706c6974ULL /* "split" */, 0));
  need = n_test;
  for (uint64_t r0 = 0; r0 < in.N; r0 += rows) {
    uint64_t n = min_u64(rows, in.N - r0), a = 0, b = 0;
    if ((rc = in_read(&in, r0, n, X, y, e))) goto cleanup;
    /* Train rows are compacted in place (a <= i always); test rows go to the side buffers. */
    for (uint64_t i = 0; i < n; i++) {
      int to_test = nn_rng_below(&r, in.N - (r0 + i)) < need;
      float *dx = to_test ? Xt + b * in.F : X + a * in.F;
      char *dy = to_test ? yt + b * w * 4 : y + a * w * 4;
      if (dx != X + i * in.F) memcpy(dx, X + i * in.F, in.F * sizeof *X);
      if (dy != y + i * w * 4) memcpy(dy, y + i * w * 4, w * 4);
      if (to_test) {
        b++;
        need--;
      } else {
        a++;
      }
    }
    if ((rc = out_write(&tr, n_train, a, X, y, e)) || (rc = out_write(&te, n_tst, b, Xt, yt, e)))
      goto cleanup;
    n_train += a;
    n_tst += b;
    progress_update(&p, (double)(r0 + n), (double)in.N);
  }
cleanup:
  if (made) {
    int rc2 = out_close(&tr, rc == 0, e), rc3 = out_close(&te, rc == 0, e);
    if (!rc) rc = rc2 ? rc2 : rc3;
  }
  progress_end(&p, rc == 0, (double)in.N * (in.F + w) * 4 * 2);
  in_close(&in);
  free(X);
  free(Xt);
  free(y);
  free(yt);
  return rc;
}

/* ---- main ------------------------------------------------------------------------------ */

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv, nn_error *e);
  int collective; /* run on every rank; the others run on rank 0 alone */
} command;

static const command commands[] = {
    {"import-idx", cmd_import_idx, 0}, {"import-csv", cmd_import_csv, 0}, {"synth", cmd_synth, 1},
    {"inspect", cmd_inspect, 0},       {"split", cmd_split, 0},
};

/* Collective: the first rank that failed tells rank 0, which prints the one error line.
 * Returns the exit status, the same on every rank. */
static int report(int rc, const nn_error *e) {
  int me = rc ? g_rank : g_nranks, first = g_nranks, code = rc;
  char msg[NN_ERRMSG_MAX];
  MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == g_nranks) return NN_EXIT_OK;
  snprintf(msg, sizeof msg, "%s", e->msg[0] ? e->msg : nn_strerror(rc));
  MPI_Bcast(&code, 1, MPI_INT, first, MPI_COMM_WORLD);
  MPI_Bcast(msg, (int)sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
  if (g_rank == 0) fprintf(stderr, "%s: %s\n", PROG, msg);
  return nn_exit_status(code);
}

int main(int argc, char **argv) {
  nn_error e = {0, ""};
  const command *cmd = NULL;
  int rc = 0, status;
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_nranks);
  if (!getenv("NNMPI_DATA_H5_ERRORS")) H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* one clear line */
  const char *bb = getenv("NNMPI_DATA_BLOCK_BYTES");
  if (bb && strtoull(bb, NULL, 10) > 0) g_block_bytes = strtoull(bb, NULL, 10);

  int help = argc < 2 || !strcmp(argv[1], "help");
  for (int i = 1; i < argc; i++) help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
  if (help) {
    if (g_rank == 0) fputs(usage_text, argc < 2 ? stderr : stdout);
    MPI_Finalize();
    return argc < 2 ? NN_EXIT_CONFIG : NN_EXIT_OK;
  }
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) cmd = &commands[i];
  if (!cmd)
    rc = nn_fail(&e, NN_ECONFIG, "unknown command '%s' (see %s --help)", argv[1], PROG);
  else if (cmd->collective || g_rank == 0)
    rc = cmd->run(argc - 2, argv + 2, &e);
  status = report(rc, &e);
  MPI_Finalize();
  return status;
}
