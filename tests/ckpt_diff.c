/* ckpt_diff A.h5 B.h5 TOL: compare the /model datasets of two checkpoints. Prints the largest
 * absolute difference relative to the largest |A| value; exits 0 when that is <= TOL (TOL 0:
 * bit-identical), 1 when larger, 2 when the files cannot be compared. */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read /model/<name> as floats; returns count or -1 when absent. */
static long read_ds(const char *path, const char *name, float **out) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return -2;
  char full[64];
  snprintf(full, sizeof full, "/model/%s", name);
  long n = -1;
  if (H5Lexists(f, full, H5P_DEFAULT) > 0) {
    hid_t d = H5Dopen2(f, full, H5P_DEFAULT), s = H5Dget_space(d);
    n = (long)H5Sget_simple_extent_npoints(s);
    *out = malloc((size_t)n * sizeof(float));
    if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0) n = -2;
    H5Sclose(s);
    H5Dclose(d);
  }
  H5Fclose(f);
  return n;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: ckpt_diff A.h5 B.h5 TOL\n");
    return 2;
  }
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  double tol = atof(argv[3]), max_diff = 0, max_abs = 0;
  long total = 0, differ = 0;
  for (int l = 1;; l++) {
    int done = 0;
    for (int which = 0; which < 2; which++) {
      char name[16];
      snprintf(name, sizeof name, "%c%d", which ? 'b' : 'W', l);
      float *a = NULL, *b = NULL;
      long na = read_ds(argv[1], name, &a), nb = read_ds(argv[2], name, &b);
      if (na == -1 && nb == -1) {
        done = 1;
        break;
      }
      if (na < 0 || nb < 0 || na != nb) {
        fprintf(stderr, "ckpt_diff: %s differs in shape or cannot be read\n", name);
        return 2;
      }
      for (long i = 0; i < na; i++) {
        max_diff = fmax(max_diff, fabs((double)a[i] - b[i]));
        max_abs = fmax(max_abs, fabs((double)a[i]));
        differ += memcmp(&a[i], &b[i], sizeof(float)) != 0;
      }
      total += na;
      free(a);
      free(b);
    }
    if (done) break;
  }
  if (total == 0) {
    fprintf(stderr, "ckpt_diff: no /model datasets in %s\n", argv[1]);
    return 2;
  }
  double rel = max_abs > 0 ? max_diff / max_abs : max_diff;
  printf("%ld values, %ld differ; max |a-b| = %.3g, max |a| = %.3g, relative %.3g (tol %g)\n", total,
         differ, max_diff, max_abs, rel, tol);
  return tol == 0 ? (differ != 0) : !(rel <= tol);
}
