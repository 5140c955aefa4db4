/* Checkpoints: build the HDF5 file in memory (core driver), then write its bytes atomically
 * (temporary file, fsync, rename, fsync of the directory). A full disk or a crash leaves the
 * previous checkpoints untouched. */
#include "nnmpi/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nnmpi/rng.h"

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
static int write_layers(hid_t parent, const char *group, const nn_layout *lay, const float *buf) {
  hid_t g = H5Gcreate2(parent, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
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

size_t nn_ckpt_image_estimate(const nn_layout *lay, int n_state) {
  size_t data = (size_t)(1 + n_state) * lay->n_params * sizeof(float);
  return ((data >> 20) + 1) << 20; /* + up to 1 MiB for attributes, config text, chunk indexes */
}

int nn_ckpt_write(const char *path, const nn_config *cfg, const char *config_text,
                  const nn_layout *lay, const float *params, int n_state,
                  const float *const *state, const char *const *state_names,
                  const nn_ckpt_meta *meta, nn_error *e) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS), f = H5I_INVALID_HID, opt = H5I_INVALID_HID;
  void *image = NULL;
  ssize_t size = 0;
  int rc = -1;
  /* The core driver grows its image by whole increments and zero-fills each, so an increment of
   * about the file's size keeps the image (and rank 0's peak memory) near the data's size. */
  size_t increment = nn_ckpt_image_estimate(lay, n_state);
  if (fapl < 0 || H5Pset_fapl_core(fapl, increment, 0) < 0) goto cleanup;
  if ((f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0) goto cleanup;

  int version = NN_CKPT_VERSION, sizes[NN_MAX_LAYERS + 1];
  long long epoch = meta->epoch, step = meta->step, in_epoch = meta->step_in_epoch;
  long long best_epoch = meta->best_epoch;
  long long seed = (long long)cfg->seed;
  int world = meta->world_size;
  char shape[NN_KEYS_MAX], trajectory[NN_KEYS_MAX];
  nn_config_keys_string(cfg, NN_KEYS_SHAPE, shape, sizeof shape);
  nn_config_keys_string(cfg, NN_KEYS_TRAJECTORY, trajectory, sizeof trajectory);
  unsigned long long model_hash = nn_hash_bytes(shape, strlen(shape));
  for (int l = 0; l <= lay->L; l++) sizes[l] = lay->n[l];
  if (set_str_attr(f, "format", NN_CKPT_FORMAT) || set_attr(f, "version", H5T_NATIVE_INT, H5T_STD_I32LE, 1, &version) ||
      set_attr(f, "epoch", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &epoch) ||
      set_attr(f, "step", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &step) ||
      set_attr(f, "step_in_epoch", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &in_epoch) ||
      set_attr(f, "epoch_sums", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 3, meta->epoch_sums) ||
      set_attr(f, "best_val_loss", H5T_NATIVE_DOUBLE, H5T_IEEE_F64LE, 1, &meta->best_val_loss) ||
      set_attr(f, "best_epoch", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &best_epoch) ||
      set_attr(f, "world_size", H5T_NATIVE_INT, H5T_STD_I32LE, 1, &world) ||
      set_attr(f, "seed", H5T_NATIVE_LLONG, H5T_STD_I64LE, 1, &seed) ||
      set_attr(f, "layers", H5T_NATIVE_INT, H5T_STD_I32LE, (size_t)lay->L + 1, sizes) ||
      set_str_attr(f, "activation", nn_act_name(cfg->activation)) ||
      set_str_attr(f, "output", nn_act_name(cfg->output)) || set_str_attr(f, "loss", nn_loss_name(cfg->loss)) ||
      set_str_attr(f, "shape_keys", shape) || set_str_attr(f, "trajectory_keys", trajectory) ||
      set_attr(f, "model_hash", H5T_NATIVE_ULLONG, H5T_STD_U64LE, 1, &model_hash) ||
      set_str_attr(f, "config", config_text ? config_text : ""))
    goto cleanup;
  if (write_layers(f, "model", lay, params)) goto cleanup;
  if (n_state > 0 && (opt = H5Gcreate2(f, "optimizer", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) goto cleanup;
  for (int i = 0; i < n_state; i++)
    if (write_layers(opt, state_names[i], lay, state[i])) goto cleanup;
  if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) goto cleanup;
  size = H5Fget_file_image(f, NULL, 0);
  if (size <= 0 || !(image = malloc((size_t)size)) || H5Fget_file_image(f, image, (size_t)size) != size)
    goto cleanup;
  rc = 0;

cleanup:
  if (opt >= 0) H5Gclose(opt);
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
      char name[128];
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

int nn_ckpt_read(const char *path, const nn_layout *lay, float *params, int n_state,
                 float *const *state, const char *const *state_names, nn_ckpt_meta *meta,
                 nn_error *e) {
  memset(meta, 0, sizeof *meta);
  if (access(path, R_OK) != 0) return nn_fail(e, NN_ECKPT, "%s: cannot open: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0) return nn_fail(e, NN_ECKPT, "%s: not an HDF5 file (truncated or corrupt?)", path);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return nn_fail(e, NN_ECKPT, "%s: cannot open as HDF5 (truncated or corrupt?)", path);
  int rc = 0, version = 0, sizes[NN_MAX_LAYERS + 1] = {0}, world = 0;
  long long epoch = 0, step = 0, in_epoch = 0;
  char format[32] = "";
  hid_t st = H5Tcopy(H5T_C_S1), kt = H5Tcopy(H5T_C_S1);
  H5Tset_size(st, sizeof format);
  H5Tset_size(kt, NN_KEYS_MAX);
  hid_t la = H5Aexists(f, "layers") > 0 ? H5Aopen(f, "layers", H5P_DEFAULT) : -1;
  hid_t ls = la >= 0 ? H5Aget_space(la) : -1;
  hssize_t n_layers = ls >= 0 ? H5Sget_simple_extent_npoints(ls) : -1;
  if (get_attr(f, "format", st, format) || strcmp(format, NN_CKPT_FORMAT) != 0) {
    rc = nn_fail(e, NN_ECKPT, "%s: not an nnmpi checkpoint (no format = \"%s\" attribute)", path, NN_CKPT_FORMAT);
  } else if (get_attr(f, "version", H5T_NATIVE_INT, &version) || version != NN_CKPT_VERSION) {
    rc = nn_fail(e, NN_ECKPT, "%s: checkpoint version %d, this nnmpi reads version %d", path, version, NN_CKPT_VERSION);
  } else if (n_layers < 2 || n_layers > NN_MAX_LAYERS + 1 || H5Aread(la, H5T_NATIVE_INT, sizes) < 0) {
    rc = nn_fail(e, NN_ECKPT, "%s: missing or bad \"layers\" attribute", path);
  } else if (lay) {
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
  if (!rc) {
    get_attr(f, "world_size", H5T_NATIVE_INT, &world);
    get_attr(f, "step_in_epoch", H5T_NATIVE_LLONG, &in_epoch);
    get_attr(f, "epoch_sums", H5T_NATIVE_DOUBLE, meta->epoch_sums);
    long long best_epoch = 0;
    get_attr(f, "best_val_loss", H5T_NATIVE_DOUBLE, &meta->best_val_loss);
    if (get_attr(f, "best_epoch", H5T_NATIVE_LLONG, &best_epoch) == 0) meta->best_epoch = (long)best_epoch;
    get_attr(f, "shape_keys", kt, meta->shape_keys);
    get_attr(f, "trajectory_keys", kt, meta->trajectory_keys);
    if (lay) rc = read_layers(f, "model", lay, params, path, e);
  }
  for (int i = 0; lay && i < n_state && !rc; i++) {
    if (!state[i]) continue;
    char group[80];
    snprintf(group, sizeof group, "optimizer/%s", state_names[i]);
    if (H5Lexists(f, "optimizer", H5P_DEFAULT) > 0 && H5Lexists(f, group, H5P_DEFAULT) > 0) {
      rc = read_layers(f, group, lay, state[i], path, e);
      meta->n_state++;
    } else {
      memset(state[i], 0, lay->n_params * sizeof(float));
    }
  }
  meta->epoch = (long)epoch;
  meta->step = (long)step;
  meta->step_in_epoch = (long)in_epoch;
  meta->world_size = world;
  if (ls >= 0) H5Sclose(ls);
  if (la >= 0) H5Aclose(la);
  H5Tclose(st);
  H5Tclose(kt);
  H5Fclose(f);
  return rc;
}

void nn_ckpt_path(char *buf, size_t n, const char *dir, long epoch, long step) {
  snprintf(buf, n, "%s/ckpt-e%04ld-s%09ld.h5", dir, epoch, step);
}

/* A name nn_ckpt_path makes: ckpt-e<digits>-s<digits>.h5 and nothing else. */
static int is_ckpt_name(const char *name) {
  long e, s;
  int used = 0;
  return sscanf(name, "ckpt-e%ld-s%ld.h5%n", &e, &s, &used) == 2 && used > 0 &&
         name[used] == '\0' && strncmp(name + used - 3, ".h5", 3) == 0;
}

static int newest_first(const void *a, const void *b) { return -strcmp(a, b); }

int nn_ckpt_list(const char *dir, char (**paths)[NN_PATH_MAX]) {
  *paths = NULL;
  DIR *d = opendir(dir);
  if (!d) return errno == ENOENT ? 0 : -1;
  int n = 0, cap = 0;
  struct dirent *ent;
  while ((ent = readdir(d))) {
    if (!is_ckpt_name(ent->d_name)) continue;
    if (n == cap) {
      char(*grown)[NN_PATH_MAX] = realloc(*paths, (size_t)(cap = 2 * cap + 16) * NN_PATH_MAX);
      if (!grown) { /* a partial list could make prune delete a newer checkpoint */
        closedir(d);
        free(*paths);
        *paths = NULL;
        return -1;
      }
      *paths = grown;
    }
    snprintf((*paths)[n++], NN_PATH_MAX, "%s", ent->d_name);
  }
  closedir(d);
  /* names sort by (epoch, step), zero-padded: sort on the bare names, then prefix dir */
  if (n > 1) qsort(*paths, (size_t)n, NN_PATH_MAX, newest_first); /* qsort(NULL, 0) is undefined */
  for (int i = 0; i < n; i++) {
    char name[NN_PATH_MAX];
    snprintf(name, sizeof name, "%s", (*paths)[i]);
    snprintf((*paths)[i], NN_PATH_MAX, "%s/%.*s", dir, (int)(NN_PATH_MAX - strlen(dir) - 2), name);
  }
  return n;
}

void nn_ckpt_prune(const char *dir, long keep) {
  if (keep <= 0) return;
  char(*paths)[NN_PATH_MAX];
  int n = nn_ckpt_list(dir, &paths);
  for (int i = (int)keep; i < n; i++) unlink(paths[i]);
  free(paths);
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
  DIR *d = opendir(dir);
  struct dirent *ent;
  while (d && (ent = readdir(d))) { /* temporaries of a writer that was killed mid-write */
    if (strstr(ent->d_name, ".h5.tmp.")) {
      snprintf(probe, sizeof probe, "%s/%s", dir, ent->d_name);
      unlink(probe);
    }
  }
  if (d) closedir(d);
  return 0;
}
