/* The run's configuration: an INI file (inih) plus --set section.key=value overrides.
 * Every key is documented in README.md ("Configuration reference"). Pure: no MPI, no I/O
 * beyond what the caller hands in (the file text is read by the caller). */
#ifndef NNMPI_CONFIG_H
#define NNMPI_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "nnmpi/error.h"
#include "nnmpi/optim.h"

#define NN_MAX_LAYERS 32   /* weight layers; the layers key holds up to NN_MAX_LAYERS + 1 sizes */
#define NN_PATH_MAX 1024
#define NN_NAME_MAX 128

typedef enum nn_act { NN_ACT_RELU, NN_ACT_SIGMOID, NN_ACT_TANH, NN_ACT_SOFTMAX, NN_ACT_LINEAR } nn_act;
typedef enum nn_loss { NN_LOSS_CROSS_ENTROPY, NN_LOSS_MSE } nn_loss;
typedef enum nn_init { NN_INIT_HE, NN_INIT_XAVIER } nn_init;
typedef enum nn_reader { NN_READER_MPIO, NN_READER_POSIX } nn_reader;
/* How the gradient is summed ([train] allreduce): one MPI_Allreduce after backprop; per-slice
 * MPI_Iallreduce during backprop; the node computing as one in shared memory (nn_shm in comm.h,
 * nn_node_step in model.h); or auto: shm when some layer's weights take NN_NODE_UNITS_BYTES or
 * more and every node runs the same number of ranks, at least 2, else blocking. */
typedef enum nn_allreduce_mode {
  NN_ALLREDUCE_BLOCKING, NN_ALLREDUCE_OVERLAP, NN_ALLREDUCE_SHM, NN_ALLREDUCE_AUTO
} nn_allreduce_mode;
/* How a node's ranks split the forward pass and the deltas with allreduce = shm ([train]
 * node_split; nn_node_step in model.h): by rows, by units, or auto (by units when some layer's
 * weights take NN_NODE_UNITS_BYTES or more). */
typedef enum nn_node_split { NN_SPLIT_AUTO, NN_SPLIT_ROWS, NN_SPLIT_UNITS } nn_node_split;
#define NN_NODE_UNITS_BYTES ((size_t)8 << 20)


typedef struct nn_config {
  /* [model] */
  int n_sizes;                       /* entries in layers: input, hidden..., output */
  int sizes[NN_MAX_LAYERS + 1];
  nn_act activation;                 /* hidden layers */
  nn_act output;                     /* output layer */
  nn_loss loss;
  nn_init init;
  double dropout;                    /* hidden units dropped in training, 0 = off */
  char init_from[NN_PATH_MAX];       /* "" = none */
  uint64_t seed;
  /* [data] */
  char train[NN_PATH_MAX];
  char test[NN_PATH_MAX];            /* "" = none */
  char features[NN_NAME_MAX];
  char labels[NN_NAME_MAX];
  int shuffle;
  long partitions;                   /* 0 = auto: largest divisor of batch_size <= 64 */
  double validation_fraction;        /* held out from the end of every partition */
  long chunk_rows;                   /* shuffling chunk: rows read and visited together */
  nn_reader reader;                  /* how shards are read: collective MPI-IO or per-rank POSIX */
  long long memory_limit;            /* bytes per rank for the training shard; 0 = no limit */
  /* [train] */
  long epochs;
  long patience;                     /* early stopping: epochs without a better val loss; 0 = off */
  long batch_size;                   /* global */
  double learning_rate;
  nn_optimizer optimizer;
  double momentum;
  double weight_decay;
  double beta1, beta2, eps;          /* Adam, AdamW */
  nn_schedule_kind lr_schedule;
  double warmup_epochs;
  double lr_step_epochs, lr_gamma;   /* step schedule */
  double min_lr;                     /* cosine floor */
  int scale_lr_with_batch;           /* lr x batch_size / base_batch (Goyal et al. 2017) */
  long base_batch;
  double clip_norm;                  /* max global L2 norm of the mean gradient; 0 = off */
  int allreduce;                     /* nn_allreduce_mode */
  int node_split;                    /* nn_node_split */
  long blas_threads;
  /* [checkpoint] */
  char ckpt_dir[NN_PATH_MAX];
  long ckpt_every;                   /* epochs; 0 = only at the end */
  long ckpt_every_steps;             /* 0 = off */
  double ckpt_every_seconds;         /* 0 = off */
  long ckpt_keep;                    /* newest checkpoints kept; 0 = all */
  char resume[NN_PATH_MAX];          /* never | auto | a checkpoint path */
  /* [log] */
  char metrics[NN_PATH_MAX];         /* "" = none */
  long log_every_steps;              /* 0 = only the per-epoch line */
  /* [debug] */
  long check_sync_every;             /* epochs between replica checks; 0 = never */
  long perturb_rank;                 /* test hook: -1 = off */
  long signal_at_step;               /* test hook: raise SIGUSR1 at this step; 0 = off */
  long signal_rank;                  /* ... on this rank */
  long file_size_limit;              /* test hook: RLIMIT_FSIZE in bytes once MPI is up; 0 = off */
  long shm_node_ranks;               /* test hook: allreduce = shm treats every this many
                                        consecutive ranks as a node (0 = the real nodes) */

  /* provenance, for messages */
  char path[NN_PATH_MAX];
  int line[64];                      /* line of each key in the file, 0 = default or --set */
} nn_config;

/* Parse the INI text of file `path`, then apply `n_sets` overrides "section.key=value".
 * On error returns NN_ECONFIG with e->msg like `my.ini:7: [train] epochs: expected a
 * positive integer, got "ten"`. */
int nn_config_parse(nn_config *cfg, const char *path, const char *text, int n_sets,
                    char *const *sets, nn_error *e);

/* Where a key came from, for messages about it: "my.ini:3: [model] layers" or
 * "--set [model] layers" or "my.ini: [model] layers (default)". */
const char *nn_config_where(const nn_config *cfg, const char *section, const char *key,
                            char *buf, size_t n);

/* Print the effective configuration as INI (every key, defaults included). */
void nn_config_print(const nn_config *cfg, FILE *f);

/* "section.key = value" lines of the keys a resumed run must share with its checkpoint:
 * NN_KEYS_SHAPE (the model's shape) or NN_KEYS_TRAJECTORY (the sequence of batches). */
enum { NN_KEYS_SHAPE, NN_KEYS_TRAJECTORY };
void nn_config_keys_string(const nn_config *cfg, int which, char *buf, size_t n);

const char *nn_act_name(nn_act a);
const char *nn_loss_name(nn_loss l);

#endif
