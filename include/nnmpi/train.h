/* The training loop: strings config -> data -> model -> comm -> optim -> checkpoint together.
 * Collective over comm. */
#ifndef NNMPI_TRAIN_H
#define NNMPI_TRAIN_H

#include <mpi.h>
#include <signal.h>

#include "nnmpi/config.h"
#include "nnmpi/error.h"

/* Set (to the signal number) by the SIGTERM/SIGUSR1 handler that main.c installs. The ranks
 * agree on it at the next step: rank 0 writes a checkpoint and all exit with NN_EPREEMPTED. */
extern volatile sig_atomic_t nn_stop_signal;

/* Train as configured. config_text is the INI text (stored in checkpoints). Returns 0 or an
 * nn_err, the same on every rank, with the message in e. Rank 0 prints progress to stdout. */
int nn_train(const nn_config *cfg, const char *config_text, MPI_Comm comm, nn_error *e);

#endif
