/* HDF5 shard loading. Metadata is read independently by each rank; the rows are read with
 * collective hyperslab reads in blocks, every rank making the same number of H5Dread calls
 * (empty selections where it has nothing left) so no rank waits alone in a collective. */
#include "nnmpi/data.h"

#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "nnmpi/comm.h"

#define BLOCK_BYTES ((size_t)64 << 20) /* rows per collective read: about 64 MiB of X */

/* Fail with a message unless every filter of the dataset can be decoded here. */
static int check_filters(hid_t dset, const char *path, const char *name, nn_error *e) {
  hid_t dcpl = H5Dget_create_plist(dset);
  if (dcpl < 0) return nn_fail(e, NN_EDATA, "%s: dataset %s: cannot read its properties", path, name);
  int nf = H5Pget_nfilters(dcpl), rc = 0;
  for (int i = 0; i < nf && !rc; i++) {
    unsigned flags, cd[8];
    size_t ncd = 8;
    char fname[64] = "";
    H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, NULL);
    if (id < 0 || H5Zfilter_avail(id) <= 0)
      rc = nn_fail(e, NN_EDATA, "%s: dataset %s: compressed with filter %d (%s) that this HDF5 "
                   "cannot decode (re-save it with gzip or no compression)", path, name, (int)id, fname);
  }
  H5Pclose(dcpl);
  return rc;
}

int nn_data_info_read(const char *path, const char *x_name, const char *y_name, nn_data_info *info,
                      nn_error *e) {
  memset(info, 0, sizeof *info);
  info->classes = -1;
  if (access(path, R_OK) != 0) return nn_fail(e, NN_EDATA, "%s: cannot open: no such readable file", path);
  if (H5Fis_hdf5(path) <= 0) return nn_fail(e, NN_EDATA, "%s: not an HDF5 file (or truncated)", path);
  hid_t f = H5I_INVALID_HID, x = H5I_INVALID_HID, y = H5I_INVALID_HID;
  hid_t xs = H5I_INVALID_HID, ys = H5I_INVALID_HID, xt = H5I_INVALID_HID, yt = H5I_INVALID_HID;
  hid_t attr = H5I_INVALID_HID;
  hsize_t xd[2] = {0, 0}, yd[2] = {0, 0};
  int rc = 0;

  if ((f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT)) < 0) {
    rc = nn_fail(e, NN_EDATA, "%s: cannot open as HDF5 (truncated or corrupt?)", path);
    goto cleanup;
  }
  if (H5Lexists(f, x_name, H5P_DEFAULT) <= 0 || (x = H5Dopen2(f, x_name, H5P_DEFAULT)) < 0) {
    rc = nn_fail(e, NN_EDATA, "%s: no dataset \"%s\" (set [data] features)", path, x_name);
    goto cleanup;
  }
  if (H5Lexists(f, y_name, H5P_DEFAULT) <= 0 || (y = H5Dopen2(f, y_name, H5P_DEFAULT)) < 0) {
    rc = nn_fail(e, NN_EDATA, "%s: no dataset \"%s\" (set [data] labels)", path, y_name);
    goto cleanup;
  }
  if ((xs = H5Dget_space(x)) < 0 || (ys = H5Dget_space(y)) < 0 || (xt = H5Dget_type(x)) < 0 ||
      (yt = H5Dget_type(y)) < 0) {
    rc = nn_fail(e, NN_EDATA, "%s: cannot read the shapes of %s and %s", path, x_name, y_name);
    goto cleanup;
  }
  int xr = H5Sget_simple_extent_ndims(xs), yr = H5Sget_simple_extent_ndims(ys);
  if (xr != 2) {
    rc = nn_fail(e, NN_EDATA, "%s: dataset %s: expected 2 dimensions (samples, features), got %d", path, x_name, xr);
    goto cleanup;
  }
  if (yr != 1 && yr != 2) {
    rc = nn_fail(e, NN_EDATA, "%s: dataset %s: expected 1 (class ids) or 2 (targets) dimensions, got %d", path, y_name, yr);
    goto cleanup;
  }
  H5Sget_simple_extent_dims(xs, xd, NULL);
  H5Sget_simple_extent_dims(ys, yd, NULL);
  H5T_class_t xc = H5Tget_class(xt), yc = H5Tget_class(yt);
  if (xc != H5T_FLOAT && xc != H5T_INTEGER) {
    rc = nn_fail(e, NN_EDATA, "%s: dataset %s: expected numbers (float or integer)", path, x_name);
    goto cleanup;
  }
  if (yc != H5T_FLOAT && yc != H5T_INTEGER) {
    rc = nn_fail(e, NN_EDATA, "%s: dataset %s: expected integer class ids or float targets", path, y_name);
    goto cleanup;
  }
  if (yc == H5T_INTEGER && yr != 1) {
    rc = nn_fail(e, NN_EDATA, "%s: dataset %s: integer class ids must be 1-D, got %d dimensions", path, y_name, yr);
    goto cleanup;
  }
  if (yd[0] != xd[0]) {
    rc = nn_fail(e, NN_EDATA, "%s: %s has %llu rows but %s has %llu", path, x_name,
                 (unsigned long long)xd[0], y_name, (unsigned long long)yd[0]);
    goto cleanup;
  }
  if (xd[0] == 0 || xd[1] == 0) {
    rc = nn_fail(e, NN_EDATA, "%s: dataset %s is empty", path, x_name);
    goto cleanup;
  }
  if ((rc = check_filters(x, path, x_name, e)) || (rc = check_filters(y, path, y_name, e))) goto cleanup;
  info->n_rows = (size_t)xd[0];
  info->n_features = (size_t)xd[1];
  info->classification = yc == H5T_INTEGER;
  info->n_targets = yr == 2 ? (size_t)yd[1] : 1;
  if (info->classification && H5Aexists(y, "classes") > 0) {
    long long c = -1;
    if ((attr = H5Aopen(y, "classes", H5P_DEFAULT)) < 0 || H5Aread(attr, H5T_NATIVE_LLONG, &c) < 0) {
      rc = nn_fail(e, NN_EDATA, "%s: dataset %s: unreadable attribute \"classes\"", path, y_name);
      goto cleanup;
    }
    info->classes = (long)c;
  }

cleanup:
  if (attr >= 0) H5Aclose(attr);
  if (xt >= 0) H5Tclose(xt);
  if (yt >= 0) H5Tclose(yt);
  if (xs >= 0) H5Sclose(xs);
  if (ys >= 0) H5Sclose(ys);
  if (x >= 0) H5Dclose(x);
  if (y >= 0) H5Dclose(y);
  if (f >= 0) H5Fclose(f);
  return rc;
}

/* One collective read of rows [r0, r0+nr) of a dataset of `cols` columns into buf (memory type
 * mtype). nr may be 0: the rank still takes part, with an empty selection. */
herr_t nn_data_read_rows(hid_t dset, hid_t dxpl, hid_t mtype, size_t r0, size_t nr, size_t cols,
                         void *buf) {
  hid_t fs = H5Dget_space(dset);
  hsize_t start[2] = {r0, 0}, count[2] = {nr, cols}; /* a 1-D y uses only the first entries */
  /* The memory space has the selection's shape: a 1-D memory space for a 2-D selection makes
   * HDF5 map element by element, several times slower. */
  hsize_t mdims[2] = {nr ? nr : 1, cols};
  hid_t ms = fs < 0 ? -1 : H5Screate_simple(H5Sget_simple_extent_ndims(fs), mdims, NULL);
  herr_t st = -1;
  if (fs < 0 || ms < 0) goto done;
  if (nr) {
    if (H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, count, NULL) < 0) goto done;
  } else if (H5Sselect_none(fs) < 0 || H5Sselect_none(ms) < 0) {
    goto done;
  }
  st = H5Dread(dset, mtype, ms, fs, dxpl, buf);
done:
  if (ms >= 0) H5Sclose(ms);
  if (fs >= 0) H5Sclose(fs);
  return st;
}

/* Values the trainer cannot use: non-finite features or targets, labels outside [0, C).
 * X (n, F), labels (n) or targets (n, T) hold rows first_row .. first_row + n - 1. */
static int check_block(const nn_data_info *in, const float *X, const int32_t *labels,
                       const float *targets, size_t n, size_t first_row, long n_classes,
                       const char *path, const char *x_name, const char *y_name, nn_error *e) {
  size_t F = in->n_features, T = in->n_targets;
  for (size_t i = 0; i < n * F; i++)
    if (!isfinite(X[i]))
      return nn_fail(e, NN_EDATA, "%s: dataset %s: %s at row %zu, column %zu (features must be "
                     "finite)", path, x_name, isnan(X[i]) ? "NaN" : "Inf", first_row + i / F, i % F);
  if (labels && n_classes > 0)
    for (size_t i = 0; i < n; i++)
      if (labels[i] < 0 || labels[i] >= n_classes)
        return nn_fail(e, NN_EDATA, "%s: dataset %s: label %d at row %zu is outside 0..%ld (the "
                       "output layer has %ld units)", path, y_name, (int)labels[i], first_row + i,
                       n_classes - 1, n_classes);
  if (targets)
    for (size_t i = 0; i < n * T; i++)
      if (!isfinite(targets[i]))
        return nn_fail(e, NN_EDATA, "%s: dataset %s: %s target at row %zu (targets must be finite)",
                       path, y_name, isnan(targets[i]) ? "NaN" : "Inf", first_row + i / T);
  return 0;
}

/* Reads the rank's rows block by block; every rank makes `blocks` calls (agreed as the max). */
static int read_all(nn_dataset *d, hid_t x, hid_t y, hid_t dxpl, int64_t *ybuf, size_t block_rows,
                    long long blocks, int keep, long n_classes, const char *path,
                    const char *x_name, const char *y_name, nn_error *e) {
  const nn_data_info *in = &d->info;
  int failed = 0;
  for (long long b = 0; b < blocks; b++) {
    size_t r0 = (size_t)b * block_rows, at = keep ? r0 : 0; /* validate-only reuses one block */
    size_t nr = r0 < d->n_local ? (d->n_local - r0 < block_rows ? d->n_local - r0 : block_rows) : 0;
    /* A rank whose earlier read failed keeps taking part, with empty reads. */
    size_t take = failed ? 0 : nr;
    if (nn_data_read_rows(x, dxpl, H5T_NATIVE_FLOAT, d->row_begin + r0, take, in->n_features,
                  d->X + at * in->n_features) < 0 && take && !failed)
      failed = nn_fail(e, NN_EDATA, "%s: dataset %s: read of rows %zu..%zu failed (file truncated "
                       "or corrupt?)", path, x_name, d->row_begin + r0, d->row_begin + r0 + nr);
    take = failed ? 0 : nr;
    herr_t st = in->classification
                    ? nn_data_read_rows(y, dxpl, H5T_NATIVE_INT64, d->row_begin + r0, take, 1, ybuf)
                    : nn_data_read_rows(y, dxpl, H5T_NATIVE_FLOAT, d->row_begin + r0, take, in->n_targets,
                                d->targets + at * in->n_targets);
    if (st < 0 && take && !failed)
      failed = nn_fail(e, NN_EDATA, "%s: dataset %s: read of rows %zu..%zu failed (file truncated "
                       "or corrupt?)", path, y_name, d->row_begin + r0, d->row_begin + r0 + nr);
    /* Labels are read as int64 so that a huge stored id is reported, not clipped to INT_MAX. */
    for (size_t i = 0; i < nr && !failed && in->classification; i++) {
      if (ybuf[i] < 0 || ybuf[i] > INT32_MAX)
        failed = nn_fail(e, NN_EDATA, "%s: dataset %s: label %lld at row %zu is not a class id",
                         path, y_name, (long long)ybuf[i], d->row_begin + r0 + i);
      d->labels[at + i] = (int32_t)ybuf[i];
    }
    if (!failed && nr)
      failed = check_block(in, d->X + at * in->n_features, d->labels ? d->labels + at : NULL,
                           d->targets ? d->targets + at * in->n_targets : NULL, nr,
                           d->row_begin + r0, n_classes, path, x_name, y_name, e);
  }
  return failed;
}

int nn_data_load(nn_dataset *d, const char *path, const char *x_name, const char *y_name,
                 size_t begin, size_t end, long n_classes, int validate_only, int posix,
                 MPI_Comm comm, nn_error *e) {
  memset(d, 0, sizeof *d);
  hid_t fapl = H5I_INVALID_HID, f = H5I_INVALID_HID, x = H5I_INVALID_HID, y = H5I_INVALID_HID;
  hid_t dxpl = H5I_INVALID_HID;
  int64_t *ybuf = NULL;
  size_t block_rows = 1;

  if (nn_data_info_read(path, x_name, y_name, &d->info, e) == 0) {
    d->row_begin = begin;
    d->n_local = end - begin;
    size_t F = d->info.n_features, T = d->info.n_targets;
    if (end < begin || end > d->info.n_rows) {
      nn_fail(e, NN_EINTERNAL, "%s: rows %zu..%zu out of range", path, begin, end);
    } else if (F > SIZE_MAX / sizeof(float) / (d->n_local + 1)) {
      nn_fail(e, NN_ENOMEM, "%s: %zu rows of %zu features overflow", path, d->n_local, F);
    } else {
      block_rows = BLOCK_BYTES / (F * sizeof(float));
      if (block_rows == 0) block_rows = 1;
      size_t rows = validate_only ? (block_rows < d->n_local ? block_rows : d->n_local) : d->n_local;
      d->X = malloc((rows * F + 1) * sizeof(float));
      if (d->info.classification) d->labels = malloc((rows + 1) * sizeof(int32_t));
      else d->targets = malloc((rows * T + 1) * sizeof(float));
      if (!d->X || (!d->labels && !d->targets))
        nn_fail(e, NN_ENOMEM, "%s: cannot allocate %zu MiB for this rank's %zu rows", path,
                (rows * (F + T) * sizeof(float)) >> 20, rows);
    }
  }
  if (nn_comm_agree(e, comm)) goto cleanup;

  long long blocks = (long long)((d->n_local + block_rows - 1) / block_rows);
  MPI_Allreduce(MPI_IN_PLACE, &blocks, 1, MPI_LONG_LONG, MPI_MAX, comm);
  if (d->info.classification && !(ybuf = malloc(block_rows * sizeof(int64_t))))
    nn_fail(e, NN_ENOMEM, "out of memory");

  /* MPI-IO with collective reads (parallel file systems), or each rank reading its own rows
   * with HDF5's POSIX driver (file systems where MPI-IO is slow or missing). */
  if ((fapl = H5Pcreate(H5P_FILE_ACCESS)) < 0 || (dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 ||
      (!posix && (H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) < 0 ||
                  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0)))
    nn_fail(e, NN_EDATA, "%s: cannot set up parallel HDF5 access", path);
  if (nn_comm_agree(e, comm)) goto cleanup;
  /* Collective open (MPI-IO): all ranks reach it, since the agreement above passed everywhere. */
  f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
  if (f < 0 || (x = H5Dopen2(f, x_name, H5P_DEFAULT)) < 0 || (y = H5Dopen2(f, y_name, H5P_DEFAULT)) < 0)
    nn_fail(e, NN_EDATA, "%s: parallel open failed (file system without MPI-IO support?)", path);
  if (nn_comm_agree(e, comm)) goto cleanup;

  read_all(d, x, y, dxpl, ybuf, block_rows, blocks, !validate_only, n_classes, path, x_name, y_name, e);
  nn_comm_agree(e, comm);
  if (validate_only) { /* the rows were only checked: keep the shapes, drop the buffers */
    free(d->X), free(d->labels), free(d->targets);
    d->X = NULL, d->labels = NULL, d->targets = NULL;
  }

cleanup:
  free(ybuf);
  if (x >= 0) H5Dclose(x);
  if (y >= 0) H5Dclose(y);
  if (f >= 0) H5Fclose(f);
  if (dxpl >= 0) H5Pclose(dxpl);
  if (fapl >= 0) H5Pclose(fapl);
  if (e->code) nn_data_free(d);
  return e->code;
}

void nn_data_free(nn_dataset *d) {
  if (!d) return;
  free(d->X);
  free(d->labels);
  free(d->targets);
  d->X = NULL;
  d->labels = NULL;
  d->targets = NULL;
}
