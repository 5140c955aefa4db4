/* Checkpoints: written, read back bit for bit; wrong shapes, truncation and a flipped byte
 * are reported; a failed write leaves no file under the final name. Takes a scratch dir. */
#include <hdf5.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nnmpi/checkpoint.h"
#include "nnmpi/rng.h"
#include "test.h"

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void copy_prefix(const char *from, const char *to, long n) {
  FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
  for (long i = 0; i < n; i++) fputc(fgetc(in), out);
  fclose(in);
  fclose(out);
}

int main(int argc, char **argv) {
  const char *dir = argc > 1 ? argv[1] : ".";
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  nn_error e = {0};
  nn_config cfg;
  const char *text = "[model]\nlayers = 6, 5, 3\n[data]\ntrain = t.h5\n[train]\nepochs = 2\nlearning_rate = 0.1\n";
  CHECK_INT(nn_config_parse(&cfg, "t.ini", text, 0, NULL, &e), 0);
  nn_layout lay;
  CHECK_INT(nn_layout_init(&lay, cfg.sizes, cfg.n_sizes, &e), 0);
  size_t n = lay.n_params;
  float *p = malloc(n * sizeof *p), *v = malloc(n * sizeof *v), *q = malloc(n * sizeof *q), *w = malloc(n * sizeof *w);
  nn_rng r;
  nn_rng_init(&r, 5);
  for (size_t i = 0; i < n; i++) p[i] = (float)nn_rng_normal(&r), v[i] = (float)nn_rng_normal(&r);

  char path[1024], tmp[1100];
  snprintf(path, sizeof path, "%s/ck.h5", dir);
  CHECK_INT(nn_ckpt_prepare_dir(dir, &e), 0);
  nn_ckpt_meta meta = {.epoch = 7, .step = 750, .step_in_epoch = 50, .world_size = 3,
                       .epoch_sums = {12.5, 40, 3200}}, got;
  const char *names[] = {"velocity", "second_moment"};
  const float *state[] = {v};
  float *read_state[] = {w, NULL};
  CHECK_INT(nn_ckpt_write(path, &cfg, text, &lay, p, 1, state, names, &meta, &e), 0);
  CHECK_INT(nn_ckpt_read(path, &lay, q, 1, read_state, names, &got, &e), 0);
  CHECK(memcmp(p, q, n * sizeof *p) == 0);
  CHECK(memcmp(v, w, n * sizeof *v) == 0);
  CHECK_INT(got.epoch, 7);
  CHECK_INT(got.step, 750);
  CHECK_INT(got.step_in_epoch, 50);
  CHECK_INT(got.world_size, 3);
  CHECK_INT(got.n_state, 1);
  CHECK_NEAR(got.epoch_sums[0], 12.5, 0);
  CHECK_NEAR(got.epoch_sums[2], 3200, 0);
  CHECK_STR_CONTAINS(got.shape_keys, "model.layers = 6, 5, 3\n");
  CHECK_STR_CONTAINS(got.trajectory_keys, "train.batch_size = 128\n");
  /* a state buffer the file lacks is zeroed */
  float *missing_state[] = {w, q};
  CHECK_INT(nn_ckpt_read(path, &lay, p, 2, missing_state, names, &got, &e), 0);
  CHECK(q[0] == 0.0f && q[n - 1] == 0.0f);
  CHECK_INT(nn_ckpt_read(path, &lay, q, 1, read_state, names, &got, &e), 0);
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  CHECK(access(tmp, F_OK) != 0); /* no temporary left behind */

  /* another model shape: refused with both shapes named */
  int other_sizes[] = {6, 4, 3};
  nn_layout other;
  nn_layout_init(&other, other_sizes, 3, &e);
  e = (nn_error){0};
  CHECK_INT(nn_ckpt_read(path, &other, q, 0, NULL, NULL, &got, &e), NN_ECKPT);
  CHECK_STR_CONTAINS(e.msg, "layers = 6, 5, 3 in the checkpoint, but 6, 4, 3 in the config");

  /* truncated copy */
  char bad[1100];
  snprintf(bad, sizeof bad, "%s/truncated.h5", dir);
  copy_prefix(path, bad, file_size(path) / 2);
  e = (nn_error){0};
  CHECK_INT(nn_ckpt_read(bad, &lay, q, 0, NULL, NULL, &got, &e), NN_ECKPT);
  CHECK_STR_CONTAINS(e.msg, "truncated.h5");

  /* one flipped byte inside the data of W1: Fletcher32 catches it */
  snprintf(bad, sizeof bad, "%s/flipped.h5", dir);
  copy_prefix(path, bad, file_size(path));
  {
    FILE *f = fopen(bad, "r+b");
    long size = file_size(bad);
    unsigned char *buf = malloc(size > 0 ? (size_t)size : 1);
    CHECK_INT(fread(buf, 1, (size_t)size, f), size);
    /* find p's first 16 bytes (W1 starts the parameter buffer) and flip a bit in them */
    long at = -1;
    for (long i = 0; i + 16 <= size && at < 0; i++)
      if (memcmp(buf + i, p, 16) == 0) at = i;
    CHECK(at >= 0);
    if (at >= 0) {
      buf[at + 5] ^= 0x10;
      fseek(f, 0, SEEK_SET);
      fwrite(buf, 1, (size_t)size, f);
    }
    fclose(f);
    free(buf);
  }
  e = (nn_error){0};
  CHECK_INT(nn_ckpt_read(bad, &lay, q, 0, NULL, NULL, &got, &e), NN_ECKPT);
  CHECK_STR_CONTAINS(e.msg, "checksum mismatch");

  /* not a checkpoint at all */
  snprintf(bad, sizeof bad, "%s/text.h5", dir);
  FILE *f = fopen(bad, "w");
  fputs("hello\n", f);
  fclose(f);
  e = (nn_error){0};
  CHECK_INT(nn_ckpt_read(bad, &lay, q, 0, NULL, NULL, &got, &e), NN_ECKPT);
  CHECK_STR_CONTAINS(e.msg, "not an HDF5 file");

  /* a write into a missing directory fails cleanly */
  e = (nn_error){0};
  CHECK_INT(nn_ckpt_write("/nonexistent-dir/x/ck.h5", &cfg, text, &lay, p, 0, NULL, NULL, &meta, &e), NN_ECKPT);
  CHECK_STR_CONTAINS(e.msg, "cannot create");

  /* listing: newest first, only checkpoint names; prune keeps the newest; stale temporaries go */
  char sub[1100], name[1200];
  snprintf(sub, sizeof sub, "%s/list-XXXXXX", dir); /* a new, empty directory every run */
  CHECK(mkdtemp(sub) != NULL);
  e = (nn_error){0};
  CHECK_INT(nn_ckpt_prepare_dir(sub, &e), 0);
  char(*paths)[NN_PATH_MAX];
  CHECK_INT(nn_ckpt_list(sub, &paths), 0); /* empty: no checkpoint yet (UBSan: no qsort(NULL)) */
  free(paths);
  nn_ckpt_prune(sub, 1);
  long steps[] = {120, 20, 1000, 40};
  for (int i = 0; i < 4; i++) {
    nn_ckpt_path(name, sizeof name, sub, steps[i] / 20, steps[i]);
    CHECK_INT(nn_ckpt_write(name, &cfg, text, &lay, p, 0, NULL, NULL, &meta, &e), 0);
  }
  snprintf(name, sizeof name, "%s/ckpt-e0001-s000000001.h5.tmp.999", sub);
  fclose(fopen(name, "w"));
  snprintf(name, sizeof name, "%s/notes.txt", sub);
  fclose(fopen(name, "w"));
  int count = nn_ckpt_list(sub, &paths);
  CHECK_INT(count, 4);
  if (count == 4) {
    CHECK_STR_CONTAINS(paths[0], "/ckpt-e0050-s000001000.h5");
    CHECK_STR_CONTAINS(paths[3], "/ckpt-e0001-s000000020.h5");
  }
  free(paths);
  nn_ckpt_prune(sub, 2);
  count = nn_ckpt_list(sub, &paths);
  CHECK_INT(count, 2);
  if (count == 2) CHECK_STR_CONTAINS(paths[1], "/ckpt-e0006-s000000120.h5");
  free(paths);
  CHECK_INT(nn_ckpt_prepare_dir(sub, &e), 0);
  snprintf(name, sizeof name, "%s/ckpt-e0001-s000000001.h5.tmp.999", sub);
  CHECK(access(name, F_OK) != 0);
  snprintf(name, sizeof name, "%s/notes.txt", sub);
  CHECK(access(name, F_OK) == 0);
  free(p), free(q), free(v), free(w);
  TEST_MAIN_END();
}
