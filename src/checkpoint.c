/* Checkpoints: build the HDF5 file in memory (core driver), then write its bytes atomically
 * (temporary file, fsync, rename, fsync of the directory). A full disk or a crash leaves the
 * previous checkpoints untouched. */
#include "nnmpi/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int set_attr(hid_t obj, const char *name, hid_t mtype, hid_t ftype, size_t n, const void *v) {
  hsize_t dim = n;
  hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
  hid_t a = sp >= 0 ? H5Acreate2(obj, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT) : -1;
  int rc = a < 0 || H5Awrite(a, mtype, v) < 0 ? -1 : 0;
  if (a >= 0) H5Aclose(a);
  if (sp >= 0) H5Sclose(sp);
  return rc;
}

static int set_str_attr(hid_t obj, const char *name, const char *s) {
  hid_t t = H5Tcopy(H5T_C_S1);
  int rc = t < 0 || H5Tset_size(t, strlen(s) + 1) < 0 ? -1 : set_attr(obj, name, t, t, 1, s);
  if (t >= 0) H5Tclose(t);
  return rc;
}

/* A chunked, checksummed float32 dataset of shape (rows, cols) (cols == 0: 1-D). */
static int write_matrix(hid_t group, const char *name, const float *data, size_t rows, size_t cols) {
  hsize_t dims[2] = {rows, cols ? cols : 1}, chunk[2];
  int rank = cols ? 2 : 1;
  size_t row_bytes = dims[1] * sizeof(float);
  chunk[0] = ((size_t)4 << 20) / row_bytes ? ((size_t)4 << 20) / row_bytes : 1; /* ~4 MiB chunks */
  if (chunk[0] > rows) chunk[0] = rows;
  chunk[1] = dims[1];
  hid_t sp = H5Screate_simple(rank, dims, NULL), dcpl = H5Pcreate(H5P_DATASET_CREATE), d = -1;
  int rc = -1;
  if (sp < 0 || dcpl < 0 || H5Pset_chunk(dcpl, rank, chunk) < 0 || H5Pset_fletcher32(dcpl) < 0) goto done;
  d = H5Dcreate2(group, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  if (d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0) rc = 0;
done:
  if (d >= 0) H5Dclose(d);
  if (dcpl >= 0) H5Pclose(dcpl);
  if (sp >= 0) H5Sclose(sp);
  return rc;
}

/* W1, b1, W2, ... of one parameter-shaped buffer into a new group. */
static int write_layers(hid_t file, const char *group, const nn_layout *lay, const float *buf) {
  hid_t g = H5Gcreate2(file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  int rc = g < 0 ? -1 : 0;
  for (int l = 1; l <= lay->L && !rc; l++) {
    char name[16];
    snprintf(name, sizeof name, "W%d", l);
    rc = write_matrix(g, name, buf + lay->W_off[l], (size_t)lay->n[l], (size_t)lay->n[l - 1]);
    snprintf(name, sizeof name, "b%d", l);
    if (!rc) rc = write_matrix(g, name, buf + lay->b_off[l], (size_t)lay->n[l], 0);
  }
  if (g >= 0) H5Gclose(g);
  return rc;
}

/* Write all bytes to a temporary file beside path, fsync, rename, fsync the directory. */
static int write_atomically(const char *path, const void *bytes, size_t n, nn_error *e) {
  char tmp[NN_PATH_MAX + 64], dir[NN_PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return nn_fail(e, NN_ECKPT, "%s: cannot create: %s", tmp, strerror(errno));
  const char *p = bytes;
  size_t left = n;
  while (left > 0) {
    ssize_t w = write(fd, p, left);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : ENOSPC;
      close(fd);
      unlink(tmp);
      return nn_fail(e, NN_ECKPT, "%s: cannot write checkpoint: %s (earlier checkpoints are kept)",
                     path, strerror(err));
    }
    p += w;
    left -= (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    int err = errno;
    unlink(tmp);
    return nn_fail(e, NN_ECKPT, "%s: cannot flush checkpoint: %s (earlier checkpoints are kept)",
                   path, strerror(err));
  }
  if (rename(tmp, path) != 0) {
    int err = errno;
    unlink(tmp);
    return nn_fail(e, NN_ECKPT, "%s: cannot rename into place: %s", path, strerror(err));
  }
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  int dfd = open(dir, O_RDONLY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return 0;
}

int nn_ckpt_write(const char *path, const nn_config *cfg, const char *config_text,
                  const nn_layout *lay, const float *params, const float *velocity,
                  const nn_ckpt_meta *meta, nn_error *e) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), f = H5I_INVALID_HID;
  void *image = NULL;
  int rc = -1;
  if (fapl < 0 || H5Pset_fapl_core(fapl, (size_t)16 << 20, 0) < 0) goto cleanup;
  if ((f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0) goto cleanup;

  int version = NN_CKPT_VERSION, sizes[NN_MAX_LAYERS + 1];
  long long epoch = meta->epoch, step = meta->step, seed = (long long)cfg->seed;
  int world = meta->world_size;
  for (int l = 0; l <= lay->L; l++) sizes[l] = lay->n[l];
  if (set_str_attr(f, "format", NN_CKPT_FORMAT) || set_attr(f, "version", H5T_NATIVE_INT, H5T_STD_I32LE, 1, &version) ||
      set_attr(f, "epoch", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &epoch) ||
      set_attr(f, "step", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &step) ||
      set_attr(f, "world_size", H5T_NATIVE_INT, H5T_STD_I32LE, 1, &world) ||
      set_attr(f, "seed", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &seed) ||
      set_attr(f, "layers", H5T_NATIVE_INT, H5T_STD_I32LE, (size_t)lay->L + 1, sizes) ||
      set_str_attr(f, "activation", nn_act_name(cfg->activation)) ||
      set_str_attr(f, "output", nn_act_name(cfg->output)) || set_str_attr(f, "loss", nn_loss_name(cfg->loss)) ||
      set_str_attr(f, "config", config_text ? config_text : ""))
    goto cleanup;
  if (write_layers(f, "model", lay, params)) goto cleanup;
  if (velocity && write_layers(f, "optimizer", lay, velocity)) goto cleanup;
  if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) goto cleanup;
  ssize_t size = H5Fget_file_image(f, NULL, 0);
  if (size <= 0 || !(image = malloc((size_t)size)) || H5Fget_file_image(f, image, (size_t)size) != size)
    goto cleanup;
  rc = 0;

cleanup:
  if (f >= 0) H5Fclose(f);
  if (fapl >= 0) H5Pclose(fapl);
  if (rc) nn_fail(e, NN_ECKPT, "%s: cannot build the checkpoint in memory (HDF5 error)", path);
  else rc = write_atomically(path, image, (size_t)size, e);
  free(image);
  return rc;
}

static int get_attr(hid_t f, const char *name, hid_t mtype, void *v) {
  hid_t a = H5Aexists(f, name) > 0 ? H5Aopen(f, name, H5P_DEFAULT) : -1;
  int rc = a < 0 || H5Aread(a, mtype, v) < 0 ? -1 : 0;
  if (a >= 0) H5Aclose(a);
  return rc;
}

static int read_layers(hid_t f, const char *group, const nn_layout *lay, float *buf, const char *path,
                       nn_error *e) {
  for (int l = 1; l <= lay->L; l++)
    for (int which = 0; which < 2; which++) {
      char name[48];
      snprintf(name, sizeof name, "/%s/%c%d", group, which ? 'b' : 'W', l);
      size_t want = which ? (size_t)lay->n[l] : (size_t)lay->n[l] * (size_t)lay->n[l - 1];
      float *dst = buf + (which ? lay->b_off[l] : lay->W_off[l]);
      hid_t d = H5Lexists(f, name, H5P_DEFAULT) > 0 ? H5Dopen2(f, name, H5P_DEFAULT) : -1;
      if (d < 0) return nn_fail(e, NN_ECKPT, "%s: missing dataset %s", path, name);
      hid_t sp = H5Dget_space(d);
      hssize_t have = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
      herr_t st = have == (hssize_t)want ? H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) : 0;
      if (sp >= 0) H5Sclose(sp);
      H5Dclose(d);
      if (have != (hssize_t)want)
        return nn_fail(e, NN_ECKPT, "%s: dataset %s has %lld values, expected %zu", path, name,
                       (long long)have, want);
      if (st < 0)
        return nn_fail(e, NN_ECKPT, "%s: dataset %s: read failed (checksum mismatch or truncated "
                       "file)", path, name);
    }
  return 0;
}

int nn_ckpt_read(const char *path, const nn_layout *lay, float *params, float *velocity,
                 nn_ckpt_meta *meta, nn_error *e) {
  memset(meta, 0, sizeof *meta);
  if (access(path, R_OK) != 0) return nn_fail(e, NN_ECKPT, "%s: cannot open: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0) return nn_fail(e, NN_ECKPT, "%s: not an HDF5 file (truncated or corrupt?)", path);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return nn_fail(e, NN_ECKPT, "%s: cannot open as HDF5 (truncated or corrupt?)", path);
  int rc = 0, version = 0, sizes[NN_MAX_LAYERS + 1] = {0}, world = 0;
  long long epoch = 0, step = 0;
  char format[32] = "";
  hid_t st = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, sizeof format);
  hid_t la = H5Aexists(f, "layers") > 0 ? H5Aopen(f, "layers", H5P_DEFAULT) : -1;
  hid_t ls = la >= 0 ? H5Aget_space(la) : -1;
  hssize_t n_layers = ls >= 0 ? H5Sget_simple_extent_npoints(ls) : -1;
  if (get_attr(f, "format", st, format) || strcmp(format, NN_CKPT_FORMAT) != 0) {
    rc = nn_fail(e, NN_ECKPT, "%s: not an nnmpi checkpoint (no format = \"%s\" attribute)", path, NN_CKPT_FORMAT);
  } else if (get_attr(f, "version", H5T_NATIVE_INT, &version) || version != NN_CKPT_VERSION) {
    rc = nn_fail(e, NN_ECKPT, "%s: checkpoint version %d, this nnmpi reads version %d", path, version, NN_CKPT_VERSION);
  } else if (n_layers < 2 || n_layers > NN_MAX_LAYERS + 1 || H5Aread(la, H5T_NATIVE_INT, sizes) < 0) {
    rc = nn_fail(e, NN_ECKPT, "%s: missing or bad \"layers\" attribute", path);
  } else {
    int same = n_layers == lay->L + 1;
    for (int l = 0; same && l <= lay->L; l++) same = sizes[l] == lay->n[l];
    if (!same) {
      char have[256] = "", want[256] = "";
      for (int l = 0; l < n_layers; l++)
        snprintf(have + strlen(have), sizeof have - strlen(have), "%s%d", l ? ", " : "", sizes[l]);
      for (int l = 0; l <= lay->L; l++)
        snprintf(want + strlen(want), sizeof want - strlen(want), "%s%d", l ? ", " : "", lay->n[l]);
      rc = nn_fail(e, NN_ECKPT, "%s: layers = %s in the checkpoint, but %s in the config", path, have, want);
    }
  }
  if (!rc && (get_attr(f, "epoch", H5T_NATIVE_LLONG, &epoch) || get_attr(f, "step", H5T_NATIVE_LLONG, &step)))
    rc = nn_fail(e, NN_ECKPT, "%s: missing epoch or step attribute", path);
  if (!rc) get_attr(f, "world_size", H5T_NATIVE_INT, &world);
  if (!rc) rc = read_layers(f, "model", lay, params, path, e);
  if (!rc && velocity) {
    meta->has_velocity = H5Lexists(f, "optimizer", H5P_DEFAULT) > 0;
    if (meta->has_velocity) rc = read_layers(f, "optimizer", lay, velocity, path, e);
    else memset(velocity, 0, lay->n_params * sizeof(float));
  }
  meta->epoch = (long)epoch;
  meta->step = (long)step;
  meta->world_size = world;
  if (ls >= 0) H5Sclose(ls);
  if (la >= 0) H5Aclose(la);
  H5Tclose(st);
  H5Fclose(f);
  return rc;
}

int nn_ckpt_prepare_dir(const char *dir, nn_error *e) {
  char buf[NN_PATH_MAX];
  snprintf(buf, sizeof buf, "%s", dir);
  for (char *p = buf + 1; *p; p++) /* mkdir -p */
    if (*p == '/') {
      *p = '\0';
      mkdir(buf, 0755);
      *p = '/';
    }
  if (mkdir(buf, 0755) != 0 && errno != EEXIST)
    return nn_fail(e, NN_ECKPT, "%s: cannot create checkpoint directory: %s", dir, strerror(errno));
  char probe[NN_PATH_MAX + 32];
  snprintf(probe, sizeof probe, "%s/.nnmpi-probe.%ld", dir, (long)getpid());
  int fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return nn_fail(e, NN_ECKPT, "%s: cannot write in checkpoint directory: %s", dir, strerror(errno));
  close(fd);
  unlink(probe);
  return 0;
}
