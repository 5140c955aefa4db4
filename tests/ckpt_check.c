/* ckpt_check FILE SIZES: read a checkpoint for layer sizes "a,b,c" the way a resume does
 * (every dataset, checksums verified); exit 0 when it is valid, 1 (with the reason) when not. */
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>

#include "nnmpi/checkpoint.h"

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: ckpt_check FILE SIZES\n");
    return 2;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  int sizes[NN_MAX_LAYERS + 1], n = 0;
  for (char *p = argv[2]; *p && n <= NN_MAX_LAYERS; p += *p == ',') sizes[n++] = (int)strtol(p, &p, 10);
  nn_layout lay;
  nn_error e = {0};
  if (nn_layout_init(&lay, sizes, n, &e)) return fprintf(stderr, "%s\n", e.msg), 2;
  float *params = malloc(lay.n_params * sizeof(float)), *s0 = malloc(lay.n_params * sizeof(float)),
        *s1 = malloc(lay.n_params * sizeof(float));
  float *state[] = {s0, s1};
  const char *names[] = {"velocity", "second_moment"};
  nn_ckpt_meta meta;
  int rc = nn_ckpt_read(argv[1], &lay, params, 2, state, names, &meta, &e);
  if (rc) fprintf(stderr, "invalid: %s\n", e.msg);
  else printf("valid: %s: epoch %ld + %ld steps, step %ld\n", argv[1], meta.epoch, meta.step_in_epoch, meta.step);
  free(params), free(s0), free(s1);
  return rc ? 1 : 0;
}
