/* nnmpi CONFIG.ini [--set section.key=value ...]: parse the command line and the config, run
 * the trainer, turn an error into one line on stderr and an exit status (README: Exit status). */
#include <hdf5.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nnmpi/comm.h"
#include "nnmpi/config.h"
#include "nnmpi/error.h"
#include "nnmpi/train.h"
#include "nnmpi/version.h"

static const char usage[] =
    "usage: mpirun -np N nnmpi CONFIG.ini [--set section.key=value ...] [--resume auto|never|PATH]\n"
    "       nnmpi --help | --version\n"
    "\n"
    "Trains a fully connected network data-parallel over the MPI ranks, as configured in\n"
    "CONFIG.ini (keys: see README.md, \"Configuration reference\"). --set overrides one key,\n"
    "e.g. --set train.epochs=3; it may be repeated. --resume X is --set checkpoint.resume=X:\n"
    "auto continues from the newest valid checkpoint in [checkpoint] dir, if any.\n"
    "SIGTERM or SIGUSR1 on any rank: checkpoint at the next step, then exit 75.\n"
    "\n"
    "Exit status: 0 done, 1 runtime or MPI failure, 2 bad command line or config,\n"
    "3 bad input data, 4 checkpoint cannot be written, read or used, 5 NaN/Inf in training,\n"
    "75 stopped by SIGTERM/SIGUSR1 after writing a checkpoint (resume to continue).\n";

static void on_stop_signal(int sig) { nn_stop_signal = sig; }

int main(int argc, char **argv) {
  nn_comm_prepare_heap();
  MPI_Init(&argc, &argv);
  int rank;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors are reported as nnmpi messages */
  signal(SIGXFSZ, SIG_IGN);              /* a file size limit becomes a write error, not a kill */
  struct sigaction sa = {.sa_handler = on_stop_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL); /* Slurm: time limit, preemption, scancel; --signal=USR1@T */
  sigaction(SIGUSR1, &sa, NULL);

  nn_error e = {0};
  const char *config_path = NULL;
  char **sets = calloc((size_t)argc + 1, sizeof *sets);
  char resume[NN_PATH_MAX + 32];
  int n_sets = 0, done = 0;
  for (int i = 1; i < argc && !e.code && !done; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      if (rank == 0) fputs(usage, stdout);
      done = 1;
    } else if (strcmp(argv[i], "--version") == 0) {
      if (rank == 0) printf("nnmpi %s\n", NN_VERSION_STRING);
      done = 1;
    } else if (strcmp(argv[i], "--set") == 0) {
      if (i + 1 >= argc) nn_fail(&e, NN_ECONFIG, "--set needs section.key=value");
      else sets[n_sets++] = argv[++i];
    } else if (strcmp(argv[i], "--resume") == 0) {
      if (i + 1 >= argc) {
        nn_fail(&e, NN_ECONFIG, "--resume needs auto, never or a checkpoint path");
      } else {
        snprintf(resume, sizeof resume, "checkpoint.resume=%s", argv[++i]);
        sets[n_sets++] = resume;
      }
    } else if (strncmp(argv[i], "--set=", 6) == 0) {
      sets[n_sets++] = argv[i] + 6;
    } else if (argv[i][0] == '-') {
      nn_fail(&e, NN_ECONFIG, "unknown option %s (see nnmpi --help)", argv[i]);
    } else if (config_path) {
      nn_fail(&e, NN_ECONFIG, "more than one config file given: %s and %s", config_path, argv[i]);
    } else {
      config_path = argv[i];
    }
  }
  if (!e.code && !done && !config_path) nn_fail(&e, NN_ECONFIG, "no config file given (see nnmpi --help)");

  if (!e.code && !done) {
    char *text = NULL;
    nn_config cfg;
    if (nn_comm_read_file(config_path, &text, MPI_COMM_WORLD, &e) == 0 &&
        nn_config_parse(&cfg, config_path, text, n_sets, sets, &e) == 0)
      nn_train(&cfg, text, MPI_COMM_WORLD, &e);
    nn_comm_agree(&e, MPI_COMM_WORLD);
    free(text);
  }
  if (e.code && rank == 0) fprintf(stderr, "nnmpi: %s: %s\n", e.code == NN_EPREEMPTED ? "stopped" : "error", e.msg);
  free(sets);
  MPI_Finalize();
  return nn_exit_status(e.code);
}
