/* Error codes: names, exit statuses and the one helper that records a message. */
#include "nnmpi/error.h"

#include <stdarg.h>
#include <stdio.h>

int nn_fail(nn_error *e, int code, const char *fmt, ...) {
  if (e && e->code == 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    e->code = code;
  }
  return code;
}

const char *nn_strerror(int code) {
  switch (code) {
  case NN_OK: return "success";
  case NN_ECONFIG: return "configuration error";
  case NN_EDATA: return "data error";
  case NN_ECKPT: return "checkpoint error";
  case NN_ENUMERIC: return "numerical error";
  case NN_ENOMEM: return "out of memory";
  case NN_EIO: return "I/O error";
  case NN_EMPI: return "MPI error";
  case NN_EREPLICA: return "replicas diverged";
  case NN_EPREEMPTED: return "stopped by a signal";
  default: return "internal error";
  }
}

int nn_exit_status(int code) {
  switch (code) {
  case NN_OK: return NN_EXIT_OK;
  case NN_ECONFIG: return NN_EXIT_CONFIG;
  case NN_EDATA: return NN_EXIT_DATA;
  case NN_ECKPT: return NN_EXIT_CKPT;
  case NN_ENUMERIC: return NN_EXIT_NUMERIC;
  case NN_EPREEMPTED: return NN_EXIT_PREEMPTED;
  default: return NN_EXIT_RUNTIME;
  }
}
