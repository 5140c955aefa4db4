/* Error codes and messages. Library functions return 0 or a negative nn_err and fill an
 * nn_error with one line of detail; only the top level (main.c) prints it and picks the exit
 * status (libuv style). */
#ifndef NNMPI_ERROR_H
#define NNMPI_ERROR_H

#include <stddef.h>

typedef enum nn_err {
  NN_OK = 0,
  NN_ECONFIG = -1,   /* bad configuration file or command line        -> exit 2 */
  NN_EDATA = -2,     /* bad or unreadable input data                  -> exit 3 */
  NN_ECKPT = -3,     /* checkpoint cannot be written or read          -> exit 4 */
  NN_ENUMERIC = -4,  /* NaN or Inf in the loss or gradient            -> exit 5 */
  NN_ENOMEM = -5,    /* out of memory or size overflow                -> exit 1 */
  NN_EIO = -6,       /* other file I/O (metrics log, ...)             -> exit 1 */
  NN_EMPI = -7,      /* an MPI call failed                            -> exit 1 */
  NN_EREPLICA = -8,  /* ranks hold different weights (a bug)          -> exit 1 */
  NN_EINTERNAL = -9, /* anything else                                 -> exit 1 */
  NN_EPREEMPTED = -10 /* stopped by SIGTERM/SIGUSR1 after a checkpoint -> exit 75 */
} nn_err;

/* Process exit statuses, documented in README.md ("Exit status"). */
enum {
  NN_EXIT_OK = 0,
  NN_EXIT_RUNTIME = 1,
  NN_EXIT_CONFIG = 2,
  NN_EXIT_DATA = 3,
  NN_EXIT_CKPT = 4,
  NN_EXIT_NUMERIC = 5,
  NN_EXIT_PREEMPTED = 75  /* EX_TEMPFAIL: checkpointed on a signal; resume to continue */
};

#define NN_ERRMSG_MAX 512

typedef struct nn_error {
  int code;                 /* an nn_err, 0 when nothing failed */
  char msg[NN_ERRMSG_MAX];  /* one line, no trailing newline */
} nn_error;

/* Record an error in e (if e is non-NULL and holds none yet) and return code. */
int nn_fail(nn_error *e, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

const char *nn_strerror(int code);
int nn_exit_status(int code);

#endif
