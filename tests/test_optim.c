/* SGD with and without momentum against a two-step example worked by hand; the finite check. */
#include "nnmpi/optim.h"
#include "test.h"

int main(void) {
  /* theta = [1, -2], g (summed over a batch of 2) = [0.4, -0.2], lr = 0.5, scale = 1/2:
   * plain SGD: theta <- theta - 0.5 * 0.5 * g = [0.9, -1.95], then [0.8, -1.9]. */
  float theta[2] = {1.0f, -2.0f}, g[2] = {0.4f, -0.2f};
  nn_sgd_step(theta, NULL, g, 2, 0.5f, 0.0f, 0.5f);
  CHECK_NEAR(theta[0], 0.9, 1e-7);
  CHECK_NEAR(theta[1], -1.95, 1e-7);
  nn_sgd_step(theta, NULL, g, 2, 0.5f, 0.0f, 0.5f);
  CHECK_NEAR(theta[0], 0.8, 1e-7);
  CHECK_NEAR(theta[1], -1.9, 1e-7);

  /* momentum 0.9: v1 = g/2 = [0.2, -0.1], theta1 = [0.9, -1.95];
   * v2 = 0.9 v1 + g/2 = [0.38, -0.19], theta2 = theta1 - 0.5 v2 = [0.71, -1.855]. */
  float t2[2] = {1.0f, -2.0f}, v[2] = {0.0f, 0.0f};
  nn_sgd_step(t2, v, g, 2, 0.5f, 0.9f, 0.5f);
  CHECK_NEAR(v[0], 0.2, 1e-7);
  CHECK_NEAR(t2[1], -1.95, 1e-7);
  nn_sgd_step(t2, v, g, 2, 0.5f, 0.9f, 0.5f);
  CHECK_NEAR(v[0], 0.38, 1e-7);
  CHECK_NEAR(v[1], -0.19, 1e-7);
  CHECK_NEAR(t2[0], 0.71, 1e-6);
  CHECK_NEAR(t2[1], -1.855, 1e-6);

  float ok[3] = {1, -1e30f, 0}, bad_nan[3] = {1, NAN, 0}, bad_inf[3] = {1, 2, -INFINITY};
  CHECK_INT(nn_all_finite(ok, 3), 1);
  CHECK_INT(nn_all_finite(bad_nan, 3), 0);
  CHECK_INT(nn_all_finite(bad_inf, 3), 0);
  TEST_MAIN_END();
}
