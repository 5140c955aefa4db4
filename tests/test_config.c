/* Config parsing: defaults, every kind of error with file, line and key named, --set. */
#include "nnmpi/config.h"
#include "test.h"

static const char *base =
    "[model]\n"
    "layers = 784, 256, 128, 10   ; input, hidden, output\n"
    "[data]\n"
    "train = data/train.h5\n"
    "[train]\n"
    "epochs = 10\n"
    "learning_rate = 0.05\n";

static int parse(nn_config *cfg, const char *text, nn_error *e) {
  *e = (nn_error){0};
  return nn_config_parse(cfg, "my.ini", text, 0, NULL, e);
}

/* Parse base + extra lines and expect an error message containing `want`. */
static void expect_error(const char *extra, const char *want) {
  char text[2048];
  snprintf(text, sizeof text, "%s%s", base, extra);
  nn_config cfg;
  nn_error e;
  CHECK_INT(parse(&cfg, text, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, want);
}

static void test_defaults(void) {
  nn_config cfg;
  nn_error e;
  CHECK_INT(parse(&cfg, base, &e), 0);
  CHECK_INT(cfg.n_sizes, 4);
  CHECK_INT(cfg.sizes[0], 784);
  CHECK_INT(cfg.sizes[3], 10);
  CHECK_INT(cfg.activation, NN_ACT_RELU);
  CHECK_INT(cfg.output, NN_ACT_SOFTMAX);
  CHECK_INT(cfg.loss, NN_LOSS_CROSS_ENTROPY);
  CHECK_INT(cfg.init, NN_INIT_HE);
  CHECK_INT(cfg.batch_size, 128);
  CHECK_INT(cfg.partitions, 64);
  CHECK_INT(cfg.shuffle, 1);
  CHECK_INT(cfg.epochs, 10);
  CHECK_NEAR(cfg.learning_rate, 0.05, 0);
  CHECK(strcmp(cfg.features, "X") == 0 && strcmp(cfg.labels, "y") == 0);
  CHECK(strcmp(cfg.ckpt_dir, "checkpoints") == 0);
  char at[256];
  CHECK(strcmp(nn_config_where(&cfg, "train", "epochs", at, sizeof at), "my.ini:6: [train] epochs") == 0);
}

static void test_values(void) {
  nn_config cfg;
  nn_error e;
  char text[2048];
  snprintf(text, sizeof text, "%s[model]\n", base); /* a section may appear again */
  CHECK_INT(parse(&cfg, text, &e), 0);
  snprintf(text, sizeof text, "%s", "[model]\nlayers=4,3\nactivation=tanh\noutput=linear\nloss=mse\n"
           "[data]\ntrain=t.h5\nshuffle=no\npartitions=4\n[train]\nepochs=1\nlearning_rate=1e-3\n"
           "batch_size=12\nmomentum=0.9\n");
  CHECK_INT(parse(&cfg, text, &e), 0);
  CHECK_INT(cfg.init, NN_INIT_XAVIER); /* default for non-relu */
  CHECK_INT(cfg.shuffle, 0);
  CHECK_INT(cfg.partitions, 4);
  CHECK_NEAR(cfg.momentum, 0.9, 1e-12);
  snprintf(text, sizeof text, "%s", "[model]\nlayers=4,3\n[data]\ntrain=t.h5\n[train]\nepochs=1\n"
           "learning_rate=1\nbatch_size=100\n");
  CHECK_INT(parse(&cfg, text, &e), 0);
  CHECK_INT(cfg.partitions, 50); /* auto: largest divisor of 100 that is at most 64 */
}

static void test_errors(void) {
  expect_error("epochs = ten\n", "my.ini:8: [train] epochs: duplicate key (first set on line 6)");
  nn_config cfg;
  nn_error e;
  CHECK_INT(parse(&cfg, "[model]\nlayers=4,3\n[data]\ntrain=t.h5\n[train]\nlearning_rate=1\nepochs = ten\n", &e), NN_ECONFIG);
  CHECK(strcmp(e.msg, "my.ini:7: [train] epochs: expected a positive integer, got \"ten\"") == 0);
  CHECK_INT(parse(&cfg, "[model]\nlayers=4,3\n[data]\ntrain=t.h5\n[train]\nlearning_rate=1\n", &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "[train] epochs: missing required key");
  CHECK_INT(parse(&cfg, "[model]\nlayers=4,3\n[train]\nepochs=1\nlearning_rate=1\n", &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "[data] train: missing required key");
  expect_error("epoch = 3\n", "my.ini:8: [train] epoch: unknown key (keys of [train]: epochs,");
  expect_error("[optim]\nlr = 1\n", "my.ini:9: [optim] lr: unknown section [optim]");
  expect_error("batch_size = 0\n", "my.ini:8: [train] batch_size: expected a positive integer, got \"0\"");
  expect_error("batch_size = 12.5\n", "[train] batch_size: expected a positive integer, got \"12.5\"");
  expect_error("momentum = 1\n", "[train] momentum: expected a number in [0, 1), got \"1\"");
  expect_error("momentum = nan\n", "[train] momentum: expected a number in [0, 1)");
  expect_error("[model]\nactivation = gelu\n", "my.ini:9: [model] activation: expected one of relu/sigmoid/tanh, got \"gelu\"");
  expect_error("[model]\noutput = linear\n", "[model] loss: cross_entropy needs output = softmax or sigmoid");
  expect_error("[data]\npartitions = 5\n", "my.ini:9: [data] partitions: 5 does not divide [train] batch_size = 128");
  expect_error("[data]\nshuffle = maybe\n", "[data] shuffle: expected true or false, got \"maybe\"");
  expect_error("this line has no equals sign\n", "my.ini:8: syntax error");
  expect_error("  batch_size = 64\n", "an indented line continues the previous value");
  CHECK_INT(parse(&cfg, "[model]\nlayers = 784\n[data]\ntrain=t\n[train]\nepochs=1\nlearning_rate=1\n", &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "my.ini:2: [model] layers: expected a comma-separated list");
  CHECK_INT(parse(&cfg, "[model]\nlayers = 784, -3, 10\n[data]\ntrain=t\n[train]\nepochs=1\nlearning_rate=1\n", &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "my.ini:2: [model] layers:");
  CHECK_INT(parse(&cfg, "[model]\nlayers = 784, 1\n[data]\ntrain=t\n[train]\nepochs=1\nlearning_rate=1\n", &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "softmax output needs at least 2 outputs");
}

static void test_set_overrides(void) {
  nn_config cfg;
  nn_error e = {0};
  char *sets[] = {"train.epochs=3", "data.shuffle=false"};
  CHECK_INT(nn_config_parse(&cfg, "my.ini", base, 2, sets, &e), 0);
  CHECK_INT(cfg.epochs, 3);
  CHECK_INT(cfg.shuffle, 0);
  char *bad[] = {"train.epochs=-1"};
  e = (nn_error){0};
  CHECK_INT(nn_config_parse(&cfg, "my.ini", base, 1, bad, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "--set [train] epochs: expected a positive integer, got \"-1\"");
  char *unknown[] = {"train.epochz=1"};
  e = (nn_error){0};
  CHECK_INT(nn_config_parse(&cfg, "my.ini", base, 1, unknown, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "unknown key [train] epochz");
  char *malformed[] = {"epochs"};
  e = (nn_error){0};
  CHECK_INT(nn_config_parse(&cfg, "my.ini", base, 1, malformed, &e), NN_ECONFIG);
  CHECK_STR_CONTAINS(e.msg, "expected section.key=value");
}

int main(void) {
  test_defaults();
  test_values();
  test_errors();
  test_set_overrides();
  TEST_MAIN_END();
}
