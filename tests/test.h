/* Minimal assertions for the unit tests: print file:line and both values, count failures. */
#ifndef NNMPI_TEST_H
#define NNMPI_TEST_H

#include <math.h>
#include <stdio.h>
#include <string.h>

static int test_failures = 0;

#define CHECK(cond)                                                                \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);     \
      test_failures++;                                                             \
    }                                                                              \
  } while (0)

#define CHECK_INT(a, b)                                                            \
  do {                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                            \
    if (a_ != b_) {                                                                \
      fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,        \
              __LINE__, #a, a_, #b, b_);                                           \
      test_failures++;                                                             \
    }                                                                              \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                      \
  do {                                                                             \
    double a_ = (double)(a), b_ = (double)(b);                                     \
    if (!(fabs(a_ - b_) <= (tol))) {                                               \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %s = %.9g (tol %g)\n", __FILE__, \
              __LINE__, #a, a_, #b, b_, (double)(tol));                            \
      test_failures++;                                                             \
    }                                                                              \
  } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                            \
  do {                                                                             \
    if (!strstr((hay), (needle))) {                                                \
      fprintf(stderr, "%s:%d: \"%s\" does not contain \"%s\"\n", __FILE__,         \
              __LINE__, (hay), (needle));                                          \
      test_failures++;                                                             \
    }                                                                              \
  } while (0)

#define TEST_MAIN_END()                                                            \
  do {                                                                             \
    if (test_failures) fprintf(stderr, "%d check(s) failed\n", test_failures);     \
    else printf("all checks passed\n");                                            \
    return test_failures ? 1 : 0;                                                  \
  } while (0)

#endif
