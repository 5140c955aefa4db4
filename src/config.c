/* INI configuration: a table of every key (type, default, allowed values), inih for the
 * syntax, and one conversion pass that names file, line and key in every error. */
#include "nnmpi/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum ktype { K_INT, K_FLOAT, K_BOOL, K_STR, K_ENUM, K_SIZES, K_SEED, K_BYTES };

typedef struct key {
  const char *section, *name;
  enum ktype type;
  size_t off;           /* offset of the field in nn_config */
  size_t size;          /* K_STR: buffer size */
  const char *def;      /* default as text; NULL = required */
  double min, max;      /* K_INT / K_FLOAT range (inclusive unless *_open) */
  int min_open;         /* K_FLOAT: min itself not allowed */
  const char *expect;   /* what a valid value looks like, for messages */
  const char *choices;  /* K_ENUM: names separated by '|', in enum order */
  const int *values;    /* K_ENUM: the enum value of each choice */
} key;

#define F(field) offsetof(nn_config, field)
#define S(field) sizeof(((nn_config *)0)->field)

static const int act_hidden_v[] = {NN_ACT_RELU, NN_ACT_SIGMOID, NN_ACT_TANH};
static const int act_out_v[] = {NN_ACT_SOFTMAX, NN_ACT_SIGMOID, NN_ACT_LINEAR};
static const int loss_v[] = {NN_LOSS_CROSS_ENTROPY, NN_LOSS_MSE};
static const int init_v[] = {-1, NN_INIT_HE, NN_INIT_XAVIER};
static const int optimizer_v[] = {NN_OPT_SGD, NN_OPT_NESTEROV, NN_OPT_ADAM, NN_OPT_ADAMW};
static const int reader_v[] = {NN_READER_MPIO, NN_READER_POSIX};
static const int allreduce_v[] = {NN_ALLREDUCE_AUTO, NN_ALLREDUCE_OVERLAP, NN_ALLREDUCE_BLOCKING, NN_ALLREDUCE_SHM};
static const int node_split_v[] = {NN_SPLIT_AUTO, NN_SPLIT_ROWS, NN_SPLIT_UNITS};
static const int schedule_v[] = {NN_SCHED_CONSTANT, NN_SCHED_STEP, NN_SCHED_COSINE};

static const key keys[] = {
    {"model", "layers", K_SIZES, F(sizes), 0, NULL, 1, 1 << 24, 0,
     "a comma-separated list of at least 2 positive integers (input, hidden..., output)", NULL, NULL},
    {"model", "activation", K_ENUM, F(activation), 0, "relu", 0, 0, 0, NULL, "relu|sigmoid|tanh",
     act_hidden_v},
    {"model", "output", K_ENUM, F(output), 0, "softmax", 0, 0, 0, NULL, "softmax|sigmoid|linear",
     act_out_v},
    {"model", "loss", K_ENUM, F(loss), 0, "cross_entropy", 0, 0, 0, NULL, "cross_entropy|mse",
     loss_v},
    {"model", "init", K_ENUM, F(init), 0, "auto", 0, 0, 0, NULL, "auto|he|xavier", init_v},
    {"model", "dropout", K_FLOAT, F(dropout), 0, "0", 0, 0.95, 0, "a number in [0, 0.95]", NULL, NULL},
    {"model", "init_from", K_STR, F(init_from), S(init_from), "", 0, 0, 0, "a file path", NULL, NULL},
    {"model", "seed", K_SEED, F(seed), 0, "1", 0, 0, 0, "a non-negative integer", NULL, NULL},
    {"data", "train", K_STR, F(train), S(train), NULL, 0, 0, 0, "a file path", NULL, NULL},
    {"data", "test", K_STR, F(test), S(test), "", 0, 0, 0, "a file path", NULL, NULL},
    {"data", "features", K_STR, F(features), S(features), "X", 0, 0, 0, "a dataset name", NULL, NULL},
    {"data", "labels", K_STR, F(labels), S(labels), "y", 0, 0, 0, "a dataset name", NULL, NULL},
    {"data", "shuffle", K_BOOL, F(shuffle), 0, "true", 0, 0, 0, "true or false", NULL, NULL},
    {"data", "validation_fraction", K_FLOAT, F(validation_fraction), 0, "0", 0, 0.9, 0,
     "a number in [0, 0.9]", NULL, NULL},
    {"data", "reader", K_ENUM, F(reader), 0, "mpio", 0, 0, 0, NULL, "mpio|posix", reader_v},
    {"data", "chunk_rows", K_INT, F(chunk_rows), 0, "4096", 1, 1 << 30, 0, "a positive integer", NULL, NULL},
    {"data", "memory_limit", K_BYTES, F(memory_limit), 0, "0", 0, 0, 0,
     "a size in bytes, with an optional K, M, G or T suffix (0 = no limit)", NULL, NULL},
    {"data", "partitions", K_INT, F(partitions), 0, "auto", 1, 1 << 20, 0,
     "auto or an integer in [1, 1048576]", NULL, NULL},
    {"train", "epochs", K_INT, F(epochs), 0, NULL, 1, 1e9, 0, "a positive integer", NULL, NULL},
    {"train", "batch_size", K_INT, F(batch_size), 0, "128", 1, 1 << 30, 0, "a positive integer", NULL, NULL},
    {"train", "learning_rate", K_FLOAT, F(learning_rate), 0, NULL, 0, 1e6, 1, "a positive number", NULL, NULL},
    {"train", "optimizer", K_ENUM, F(optimizer), 0, "sgd", 0, 0, 0, NULL, "sgd|nesterov|adam|adamw", optimizer_v},
    {"train", "momentum", K_FLOAT, F(momentum), 0, "0", 0, 0.999999, 0, "a number in [0, 1)", NULL, NULL},
    {"train", "weight_decay", K_FLOAT, F(weight_decay), 0, "0", 0, 1e3, 0, "a non-negative number", NULL, NULL},
    {"train", "beta1", K_FLOAT, F(beta1), 0, "0.9", 0, 0.999999, 0, "a number in [0, 1)", NULL, NULL},
    {"train", "beta2", K_FLOAT, F(beta2), 0, "0.999", 0, 0.999999, 0, "a number in [0, 1)", NULL, NULL},
    {"train", "eps", K_FLOAT, F(eps), 0, "1e-8", 0, 1, 1, "a positive number", NULL, NULL},
    {"train", "lr_schedule", K_ENUM, F(lr_schedule), 0, "constant", 0, 0, 0, NULL, "constant|step|cosine", schedule_v},
    {"train", "warmup_epochs", K_FLOAT, F(warmup_epochs), 0, "0", 0, 1e9, 0, "a non-negative number of epochs", NULL, NULL},
    {"train", "lr_step_epochs", K_FLOAT, F(lr_step_epochs), 0, "10", 0, 1e9, 1, "a positive number of epochs", NULL, NULL},
    {"train", "lr_gamma", K_FLOAT, F(lr_gamma), 0, "0.1", 0, 1, 1, "a number in (0, 1]", NULL, NULL},
    {"train", "min_lr", K_FLOAT, F(min_lr), 0, "0", 0, 1e6, 0, "a non-negative number", NULL, NULL},
    {"train", "scale_lr_with_batch", K_BOOL, F(scale_lr_with_batch), 0, "false", 0, 0, 0, "true or false", NULL, NULL},
    {"train", "base_batch", K_INT, F(base_batch), 0, "128", 1, 1 << 30, 0, "a positive integer", NULL, NULL},
    {"train", "patience", K_INT, F(patience), 0, "0", 0, 1e9, 0, "a non-negative integer (0 = off)", NULL, NULL},
    {"train", "clip_norm", K_FLOAT, F(clip_norm), 0, "0", 0, 1e30, 0, "a non-negative number (0 = off)", NULL, NULL},
    {"train", "allreduce", K_ENUM, F(allreduce), 0, "auto", 0, 0, 0, NULL, "auto|overlap|blocking|shm", allreduce_v},
    {"train", "node_split", K_ENUM, F(node_split), 0, "auto", 0, 0, 0, NULL, "auto|rows|units", node_split_v},
    {"train", "blas_threads", K_INT, F(blas_threads), 0, "1", 1, 1024, 0, "an integer in [1, 1024]", NULL, NULL},
    {"checkpoint", "dir", K_STR, F(ckpt_dir), S(ckpt_dir), "checkpoints", 0, 0, 0, "a directory path", NULL, NULL},
    {"checkpoint", "every", K_INT, F(ckpt_every), 0, "1", 0, 1e9, 0, "a non-negative integer", NULL, NULL},
    {"checkpoint", "every_steps", K_INT, F(ckpt_every_steps), 0, "0", 0, 1e15, 0, "a non-negative integer", NULL, NULL},
    {"checkpoint", "every_seconds", K_FLOAT, F(ckpt_every_seconds), 0, "0", 0, 1e9, 0,
     "a non-negative number of seconds", NULL, NULL},
    {"checkpoint", "keep", K_INT, F(ckpt_keep), 0, "3", 0, 1e9, 0, "a non-negative integer (0 = keep all)", NULL, NULL},
    {"checkpoint", "resume", K_STR, F(resume), S(resume), "never", 0, 0, 0,
     "never, auto or a checkpoint path", NULL, NULL},
    {"log", "metrics", K_STR, F(metrics), S(metrics), "", 0, 0, 0, "a file path", NULL, NULL},
    {"log", "every_steps", K_INT, F(log_every_steps), 0, "0", 0, 1e12, 0, "a non-negative integer", NULL, NULL},
    {"debug", "check_sync_every", K_INT, F(check_sync_every), 0, "1", 0, 1e9, 0,
     "a non-negative integer", NULL, NULL},
    {"debug", "perturb_rank", K_INT, F(perturb_rank), 0, "-1", -1, 1 << 30, 0, "-1 or a rank number",
     NULL, NULL},
    {"debug", "signal_at_step", K_INT, F(signal_at_step), 0, "0", 0, 1e15, 0, "a non-negative integer",
     NULL, NULL},
    {"debug", "signal_rank", K_INT, F(signal_rank), 0, "0", 0, 1 << 30, 0, "a rank number", NULL, NULL},
    {"debug", "file_size_limit", K_INT, F(file_size_limit), 0, "0", 0, 1e15, 0,
     "a non-negative number of bytes", NULL, NULL},
    {"debug", "shm_node_ranks", K_INT, F(shm_node_ranks), 0, "0", 0, 1 << 30, 0,
     "a non-negative integer", NULL, NULL},
};
enum { N_KEYS = sizeof keys / sizeof keys[0] };
static const char *const sections[] = {"model", "data", "train", "checkpoint", "log", "debug"};

typedef struct raw {
  char *value; /* NULL = not given */
  int line;    /* 0 = from --set */
} raw;

typedef struct parse_ctx {
  const char *path;
  const char *text_pos;
  int line;          /* line most recently handed to inih */
  int long_line;     /* first line longer than inih's buffer */
  raw raws[N_KEYS];
  int last_key, last_line;
  nn_error *e;
} parse_ctx;

static int find_key(const char *section, const char *name) {
  for (int i = 0; i < N_KEYS; i++)
    if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) return i;
  return -1;
}

static int known_section(const char *section) {
  for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++)
    if (strcmp(sections[i], section) == 0) return 1;
  return 0;
}

/* "epochs, batch_size, ..." for the section, to suggest in an unknown-key message. */
static void list_keys(const char *section, char *buf, size_t n) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < N_KEYS && used < n; i++)
    if (strcmp(keys[i].section, section) == 0)
      used += (size_t)snprintf(buf + used, n - used, "%s%s", used ? ", " : "", keys[i].name);
}

/* The prefix of a message about key k: "my.ini:7: [train] epochs" or "--set [train] epochs". */
static void where(const parse_ctx *c, int k, int line, char *buf, size_t n) {
  if (line > 0)
    snprintf(buf, n, "%s:%d: [%s] %s", c->path, line, keys[k].section, keys[k].name);
  else if (line == 0 && c->raws[k].value)
    snprintf(buf, n, "--set [%s] %s", keys[k].section, keys[k].name);
  else
    snprintf(buf, n, "%s: [%s] %s", c->path, keys[k].section, keys[k].name);
}

static int store(parse_ctx *c, int k, const char *value, int line) {
  raw *r = &c->raws[k];
  char *copy = strdup(value);
  if (!copy) return nn_fail(c->e, NN_ENOMEM, "out of memory while parsing %s", c->path);
  free(r->value);
  r->value = copy;
  r->line = line;
  return 0;
}

/* inih handler: record the raw text of a known key; reject unknown and repeated keys. */
static int on_key(void *user, const char *section, const char *name, const char *value) {
  parse_ctx *c = user;
  if (c->e->code) return 1; /* report the first error only */
  if (!known_section(section)) {
    nn_fail(c->e, NN_ECONFIG, "%s:%d: [%s] %s: unknown section [%s] (sections: model, data, "
            "train, checkpoint, log, debug)", c->path, c->line, section, name, section);
    return 0;
  }
  int k = find_key(section, name);
  if (k < 0) {
    char known[512];
    list_keys(section, known, sizeof known);
    nn_fail(c->e, NN_ECONFIG, "%s:%d: [%s] %s: unknown key (keys of [%s]: %s)", c->path, c->line,
            section, name, section, known);
    return 0;
  }
  if (c->raws[k].value) {
    if (k == c->last_key && c->line == c->last_line + 1)
      nn_fail(c->e, NN_ECONFIG, "%s:%d: [%s] %s: an indented line continues the previous value; "
              "remove its leading spaces", c->path, c->line, section, name);
    else
      nn_fail(c->e, NN_ECONFIG, "%s:%d: [%s] %s: duplicate key (first set on line %d)", c->path,
              c->line, section, name, c->raws[k].line);
    return 0;
  }
  c->last_key = k;
  c->last_line = c->line;
  return store(c, k, value, c->line) == 0;
}

/* inih reader over the in-memory text that counts lines, so messages can name them. */
static char *read_line(char *str, int num, void *stream) {
  parse_ctx *c = stream;
  const char *p = c->text_pos;
  if (*p == '\0') return NULL;
  size_t len = strcspn(p, "\n");
  size_t take = len + (p[len] == '\n');
  c->line++;
  if (len >= (size_t)num - 1) {
    if (!c->long_line) c->long_line = c->line;
    len = 0; /* hand inih an empty line; the error is reported after parsing */
  }
  memcpy(str, p, len);
  str[len] = '\0';
  c->text_pos = p + take;
  return str;
}

static int parse_long(const char *s, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end != '\0') return -1;
  *out = v;
  return 0;
}

static int convert(const parse_ctx *c, nn_config *cfg, int k) {
  const key *K = &keys[k];
  const raw *r = &c->raws[k];
  const char *v = r->value ? r->value : K->def;
  char at[256];
  where(c, k, r->value ? r->line : -1, at, sizeof at);
  char *field = (char *)cfg + K->off;
  if (!v) return nn_fail(c->e, NN_ECONFIG, "%s: missing required key (%s)", at, K->expect);
  if (k < (int)(sizeof cfg->line / sizeof cfg->line[0])) cfg->line[k] = r->value ? r->line : 0;

  switch (K->type) {
  case K_INT: {
    long x;
    if (strcmp(v, "auto") == 0 && strstr(K->expect, "auto")) {
      *(long *)field = 0;
      return 0;
    }
    if (parse_long(v, &x) || x < K->min || x > K->max)
      return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"%s\"", at, K->expect, v);
    *(long *)field = x;
    return 0;
  }
  case K_SEED: {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end != '\0' || v[0] == '-')
      return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"%s\"", at, K->expect, v);
    *(uint64_t *)field = (uint64_t)x;
    return 0;
  }
  case K_BYTES: {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    const char *units = "KMGT";
    double scale = 1;
    if (*end && strchr(units, *end) && end[0] != '\0') {
      for (const char *u = units; *u; u++) {
        scale *= 1024;
        if (*u == *end) break;
      }
      end += 1 + (end[1] == 'B' || end[1] == 'i');
      if (end[-1] == 'i' && *end == 'B') end++;
    }
    if (errno || end == v || *end != '\0' || !(x >= 0) || x * scale > 1e18)
      return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"%s\"", at, K->expect, v);
    *(long long *)field = (long long)(x * scale);
    return 0;
  }
  case K_FLOAT: {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end != '\0' || !isfinite(x) || x < K->min || x > K->max ||
        (K->min_open && x == K->min))
      return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"%s\"", at, K->expect, v);
    *(double *)field = x;
    return 0;
  }
  case K_BOOL: {
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
    for (int i = 0; i < 4; i++) {
      if (strcasecmp(v, yes[i]) == 0) return *(int *)field = 1, 0;
      if (strcasecmp(v, no[i]) == 0) return *(int *)field = 0, 0;
    }
    return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"%s\"", at, K->expect, v);
  }
  case K_STR:
    if (strlen(v) >= K->size)
      return nn_fail(c->e, NN_ECONFIG, "%s: value longer than %zu characters", at, K->size - 1);
    if (!K->def && v[0] == '\0') return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"\"", at, K->expect);
    strcpy(field, v);
    return 0;
  case K_ENUM: {
    const char *p = K->choices;
    for (int i = 0; *p; i++) {
      size_t len = strcspn(p, "|");
      if (strlen(v) == len && strncmp(v, p, len) == 0) return *(int *)field = K->values[i], 0;
      p += len + (p[len] == '|');
    }
    char list[128];
    snprintf(list, sizeof list, "%s", K->choices);
    for (char *q = list; *q; q++)
      if (*q == '|') *q = '/';
    return nn_fail(c->e, NN_ECONFIG, "%s: expected one of %s, got \"%s\"", at, list, v);
  }
  case K_SIZES: {
    int *sizes = (int *)field, n = 0;
    const char *p = v;
    while (*p) {
      char *end;
      errno = 0;
      long x = strtol(p, &end, 10);
      while (*end == ' ' || *end == '\t') end++;
      if (errno || end == p || x < K->min || x > K->max || (*end && *end != ',') || n > NN_MAX_LAYERS)
        return nn_fail(c->e, NN_ECONFIG, "%s: expected %s (at most %d, each at most %d), got \"%s\"",
                       at, K->expect, NN_MAX_LAYERS + 1, 1 << 24, v);
      sizes[n++] = (int)x;
      p = *end ? end + 1 : end;
    }
    if (n < 2) return nn_fail(c->e, NN_ECONFIG, "%s: expected %s, got \"%s\"", at, K->expect, v);
    cfg->n_sizes = n;
    return 0;
  }
  }
  return nn_fail(c->e, NN_EINTERNAL, "%s: unhandled key type", at);
}

/* Rules that involve more than one key. */
static int cross_check(const parse_ctx *c, nn_config *cfg) {
  char at[256];
  int out = cfg->sizes[cfg->n_sizes - 1];
  if (cfg->loss == NN_LOSS_CROSS_ENTROPY && cfg->output == NN_ACT_LINEAR) {
    where(c, find_key("model", "loss"), cfg->line[find_key("model", "loss")], at, sizeof at);
    return nn_fail(c->e, NN_ECONFIG, "%s: cross_entropy needs output = softmax or sigmoid "
                   "(use loss = mse with output = linear)", at);
  }
  if (cfg->output == NN_ACT_SOFTMAX && out < 2) {
    where(c, find_key("model", "layers"), cfg->line[find_key("model", "layers")], at, sizeof at);
    return nn_fail(c->e, NN_ECONFIG, "%s: softmax output needs at least 2 outputs, got %d", at, out);
  }
  if (cfg->patience > 0 && cfg->validation_fraction <= 0) {
    where(c, find_key("train", "patience"), cfg->line[find_key("train", "patience")], at, sizeof at);
    return nn_fail(c->e, NN_ECONFIG, "%s: early stopping watches the validation loss: set [data] "
                   "validation_fraction too", at);
  }
  if ((int)cfg->init < 0) cfg->init = cfg->activation == NN_ACT_RELU ? NN_INIT_HE : NN_INIT_XAVIER;

  int kp = find_key("data", "partitions");
  where(c, kp, c->raws[kp].value ? c->raws[kp].line : -1, at, sizeof at);
  if (cfg->partitions == 0) { /* auto: the largest divisor of the batch that is at most 64 */
    for (long p = 64; p >= 1; p--)
      if (cfg->batch_size % p == 0) {
        cfg->partitions = p;
        break;
      }
  } else if (cfg->batch_size % cfg->partitions != 0) {
    return nn_fail(c->e, NN_ECONFIG, "%s: %ld does not divide [train] batch_size = %ld (every "
                   "global batch takes batch_size / partitions rows from each partition)", at,
                   cfg->partitions, cfg->batch_size);
  }
  return 0;
}

int nn_config_parse(nn_config *cfg, const char *path, const char *text, int n_sets,
                    char *const *sets, nn_error *e) {
  parse_ctx c = {.path = path, .text_pos = text, .last_key = -1, .e = e};
  memset(cfg, 0, sizeof *cfg);
  snprintf(cfg->path, sizeof cfg->path, "%s", path);

  int rc = ini_parse_stream(read_line, &c, on_key, &c);
  if (!e->code && c.long_line)
    nn_fail(e, NN_ECONFIG, "%s:%d: line too long (inih reads at most 199 characters a line)", path,
            c.long_line);
  if (!e->code && rc > 0)
    nn_fail(e, NN_ECONFIG, "%s:%d: syntax error: expected [section], key = value, or a comment", path, rc);
  if (!e->code && rc < 0) nn_fail(e, NN_ENOMEM, "%s: the INI parser failed (%d)", path, rc);

  for (int i = 0; i < n_sets && !e->code; i++) {
    const char *s = sets[i], *dot = strchr(s, '.'), *eq = strchr(s, '=');
    if (!dot || !eq || dot > eq) {
      nn_fail(e, NN_ECONFIG, "--set %s: expected section.key=value", s);
      break;
    }
    char section[64], name[64];
    snprintf(section, sizeof section, "%.*s", (int)(dot - s), s);
    snprintf(name, sizeof name, "%.*s", (int)(eq - dot - 1), dot + 1);
    int k = find_key(section, name);
    if (k < 0) {
      nn_fail(e, NN_ECONFIG, "--set %s: unknown key [%s] %s", s, section, name);
      break;
    }
    store(&c, k, eq + 1, 0);
  }
  for (int k = 0; k < N_KEYS && !e->code; k++) convert(&c, cfg, k);
  if (!e->code) cross_check(&c, cfg);

  for (int k = 0; k < N_KEYS; k++) free(c.raws[k].value);
  return e->code;
}

const char *nn_config_where(const nn_config *cfg, const char *section, const char *name,
                            char *buf, size_t n) {
  int k = find_key(section, name);
  if (k < 0) {
    snprintf(buf, n, "%s: [%s] %s", cfg->path, section, name);
  } else if (cfg->line[k] > 0) {
    snprintf(buf, n, "%s:%d: [%s] %s", cfg->path, cfg->line[k], section, name);
  } else {
    snprintf(buf, n, "%s: [%s] %s", cfg->path, section, name);
  }
  return buf;
}

static const char *enum_name(const key *K, int value) {
  static char name[32];
  const char *p = K->choices;
  for (int i = 0; *p; i++) {
    size_t len = strcspn(p, "|");
    if (K->values[i] == value) {
      snprintf(name, sizeof name, "%.*s", (int)len, p);
      return name;
    }
    p += len + (p[len] == '|');
  }
  return "?";
}

const char *nn_act_name(nn_act a) {
  static const char *const names[] = {"relu", "sigmoid", "tanh", "softmax", "linear"};
  return (unsigned)a < 5 ? names[a] : "?";
}

const char *nn_loss_name(nn_loss l) { return l == NN_LOSS_MSE ? "mse" : "cross_entropy"; }

/* The value of key k as the config file would spell it. */
static void format_value(const nn_config *cfg, int k, char *buf, size_t n) {
  const key *K = &keys[k];
  const char *field = (const char *)cfg + K->off;
  switch (K->type) {
  case K_INT: snprintf(buf, n, "%ld", *(const long *)field); break;
  case K_BYTES: snprintf(buf, n, "%lld", *(const long long *)field); break;
  case K_SEED: snprintf(buf, n, "%llu", (unsigned long long)*(const uint64_t *)field); break;
  case K_FLOAT: snprintf(buf, n, "%.10g", *(const double *)field); break;
  case K_BOOL: snprintf(buf, n, "%s", *(const int *)field ? "true" : "false"); break;
  case K_STR: snprintf(buf, n, "%s", field); break;
  case K_ENUM: snprintf(buf, n, "%s", enum_name(K, *(const int *)field)); break;
  case K_SIZES: {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < cfg->n_sizes && used < n; i++)
      used += (size_t)snprintf(buf + used, n - used, "%s%d", i ? ", " : "", cfg->sizes[i]);
    break;
  }
  }
}

void nn_config_print(const nn_config *cfg, FILE *f) {
  const char *section = "";
  char value[NN_PATH_MAX];
  for (int k = 0; k < N_KEYS; k++) {
    if (strcmp(section, keys[k].section) != 0)
      fprintf(f, "%s[%s]\n", k ? "\n" : "", section = keys[k].section);
    format_value(cfg, k, value, sizeof value);
    fprintf(f, "%-16s = %s\n", keys[k].name, value);
  }
}

/* Keys that shape the model, and keys that fix the sequence of updates: a resumed run must
 * agree with its checkpoint on all of them. */
static const char *const shape_keys[] = {"model.layers", "model.activation", "model.output", "model.loss", NULL};
static const char *const trajectory_keys[] = {"model.seed", "data.shuffle", "data.partitions", "data.validation_fraction", "data.chunk_rows",
                                              "train.batch_size", "train.optimizer", NULL};

void nn_config_keys_string(const nn_config *cfg, int which, char *buf, size_t n) {
  const char *const *list = which == NN_KEYS_SHAPE ? shape_keys : trajectory_keys;
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; list[i] && used < n; i++) {
    char section[32], value[NN_PATH_MAX];
    const char *dot = strchr(list[i], '.');
    snprintf(section, sizeof section, "%.*s", (int)(dot - list[i]), list[i]);
    format_value(cfg, find_key(section, dot + 1), value, sizeof value);
    used += (size_t)snprintf(buf + used, n - used, "%s = %s\n", list[i], value);
  }
}
