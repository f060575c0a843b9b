/* What compute/_steady.c (the machine's steady state) and compute/_steadyio.c
 * (the engine that runs it over the guests' sockets) share. */
#ifndef NFVHA_STEADY_H
#define NFVHA_STEADY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

struct Engine;

typedef struct {
    PyObject_HEAD
    PyObject *nonces;       /* block -> 64 bytes: host.prf_block for this seed */
    long long block;        /* the block of `digest` (-1: none) */
    unsigned char digest[64];
    uint64_t nonce_counter;
    uint32_t sequence;
    int has_nonce, has_previous;
    uint32_t nonce, previous_nonce;
    int answered, judged;
    int has_challenged, has_deadline, has_respond, has_probe, has_srtt, has_rtt;
    double challenged_at, deadline, respond_by, probe_at;
    double srtt, rttvar, rtt_ms;
    long long rtt_count, streak, ontime_streak;
    long interval_ms, min_response_ms;
    /* while an Engine serves it (engine != NULL; the engine holds a reference) */
    struct Engine *engine;
    Py_ssize_t slot;        /* its index in the engine's heap */
    int fd;                 /* the guest's socket */
    double at;              /* when its timer is due (steady_next_at when it was armed) */
    PyObject *owner;        /* the session, handed back when the C path ends */
    PyObject *counters;     /* the session's counters dict ("bytes_in") */
    PyObject *rtt_append, *late_append;  /* the session's Samples.append */
} Steady;

extern PyTypeObject SteadyType;

#define CHALLENGE_MAX 160
enum { TICK_ERROR = -1, TICK_NONE = 0, TICK_CHALLENGE = 1, TICK_PYTHON = 2 };

/* TICK_CHALLENGE: the challenge's bytes are in buf (CHALLENGE_MAX), *len of
 * them; TICK_NONE: none due yet; TICK_PYTHON: the Python machine's tick;
 * TICK_ERROR: a Python exception is set. */
int steady_tick(Steady *self, double now, char *buf, Py_ssize_t *len);
/* 1: `data` (one read) is the expected answer, taken, round trip in *rtt_ms;
 * 0: not the steady state's input, nothing changed. */
int steady_answer(Steady *self, const char *data, Py_ssize_t size, double now, double *rtt_ms);
double steady_next_at(const Steady *self);

/* compute/_steadyio.c: adds the Engine type to the module */
int steadyio_add_types(PyObject *module);

#endif
