/* The host heartbeat machine's steady state, in C: header prediction.
 *
 * A thousand healthy guests at 100 ms make ten thousand identical cycles a
 * second: a challenge out, its answer in, nothing else. nfvha.protocol.host
 * (pure Python) stays the one definition of the protocol; this object only
 * takes over a session while that session is in the steady state (enabled,
 * healthy, nothing pending: nfvha/compute/steady.py decides when) and does
 * exactly what host.step would do for the two events of that state:
 *
 *   tick(now)          -> the challenge's bytes (host._challenge +
 *                         framing.encode), b"" when no challenge is due yet,
 *                         or None: the Python machine must take this tick
 *                         (an unanswered challenge reached its window of
 *                         evidence);
 *   answer(data, now)  -> the round trip in ms if ``data`` (one read) is
 *                         exactly one line holding a valid, healthy answer
 *                         to the current challenge (host._response's on-time
 *                         branch), else None and nothing changed: the
 *                         Python machine takes the bytes.
 *
 * Anything this object does not recognise is not judged here: it returns
 * None and the session hands its state back (export()) to the Python
 * machine, which decides as it always did. So the JSON accepted is a strict
 * subset (flat object; unescaped printable-ASCII strings; non-negative
 * integers; no duplicate known key) on which json, msgspec and this parser
 * agree. Sans-I/O like the machine it shadows: no sockets, no clock.
 * (tests/test_steady_path_agrees_with_the_host_machine.py)
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "_steady.h"

#pragma STDC FP_CONTRACT OFF

/* ---- constants, from the Python protocol modules (configure()) -------------- */

#define MAX_ACTIONS 16
static long c_version = -1, c_revision = -1, c_log_msg_max = 0, c_rtt_before_adapting = 0;
static uint32_t c_nonce_max = 0;
static Py_ssize_t c_max_msg = 0;
static int c_n_actions = 0;
static char c_actions[MAX_ACTIONS][32];

/* ---- the object: compute/_steady.h ------------------------------------------ */

static int opt_double(PyObject *state, const char *name, int *has, double *out)
{
    PyObject *v = PyObject_GetAttrString(state, name);
    if (v == NULL)
        return -1;
    if (v == Py_None) {
        *has = 0;
        *out = 0.0;
    } else {
        *has = 1;
        *out = PyFloat_AsDouble(v);
    }
    Py_DECREF(v);
    return (*has && *out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int get_ll(PyObject *obj, const char *name, long long *out)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL)
        return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

static int opt_u32(PyObject *state, const char *name, int *has, uint32_t *out)
{
    PyObject *v = PyObject_GetAttrString(state, name);
    if (v == NULL)
        return -1;
    *has = v != Py_None;
    *out = 0;
    if (*has) {
        unsigned long x = PyLong_AsUnsignedLong(v);
        if (x == (unsigned long)-1 && PyErr_Occurred()) {
            Py_DECREF(v);
            return -1;
        }
        if (x > UINT32_MAX) {
            Py_DECREF(v);
            PyErr_Format(PyExc_ValueError, "%s out of range", name);
            return -1;
        }
        *out = (uint32_t)x;
    }
    Py_DECREF(v);
    return 0;
}

static int get_bool(PyObject *obj, const char *name, int *out)
{
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL)
        return -1;
    *out = PyObject_IsTrue(v);
    Py_DECREF(v);
    return *out < 0 ? -1 : 0;
}

static int Steady_init(Steady *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"state", "nonces", NULL};
    PyObject *state, *nonces, *reg, *cfg;
    long long x;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO", kwlist, &state, &nonces))
        return -1;
    if (c_version < 0) {
        PyErr_SetString(PyExc_RuntimeError, "configure() first");
        return -1;
    }
    if (self->engine != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "on an engine");
        return -1;
    }
    Py_INCREF(nonces);
    Py_XSETREF(self->nonces, nonces);
    self->block = -1;
    {
        PyObject *v = PyObject_GetAttrString(state, "nonce_counter");
        if (v == NULL)
            return -1;
        self->nonce_counter = (uint64_t)PyLong_AsUnsignedLongLong(v);
        Py_DECREF(v);
        if (self->nonce_counter == (uint64_t)-1 && PyErr_Occurred())
            return -1;
    }
    if (get_ll(state, "sequence", &x) < 0)
        return -1;
    self->sequence = (uint32_t)x;
    if (opt_u32(state, "nonce", &self->has_nonce, &self->nonce) < 0
        || opt_u32(state, "previous_nonce", &self->has_previous, &self->previous_nonce) < 0
        || get_bool(state, "answered", &self->answered) < 0
        || get_bool(state, "judged", &self->judged) < 0
        || opt_double(state, "challenged_at", &self->has_challenged, &self->challenged_at) < 0
        || opt_double(state, "deadline", &self->has_deadline, &self->deadline) < 0
        || opt_double(state, "respond_by", &self->has_respond, &self->respond_by) < 0
        || opt_double(state, "probe_at", &self->has_probe, &self->probe_at) < 0
        || opt_double(state, "srtt_ms", &self->has_srtt, &self->srtt) < 0
        || opt_double(state, "rtt_ms", &self->has_rtt, &self->rtt_ms) < 0
        || get_ll(state, "rtt_count", &self->rtt_count) < 0
        || get_ll(state, "streak", &self->streak) < 0
        || get_ll(state, "ontime_streak", &self->ontime_streak) < 0)
        return -1;
    {
        int has;
        if (opt_double(state, "rttvar_ms", &has, &self->rttvar) < 0)
            return -1;
    }
    reg = PyObject_GetAttrString(state, "registration");
    if (reg == NULL)
        return -1;
    if (reg == Py_None) {
        Py_DECREF(reg);
        PyErr_SetString(PyExc_ValueError, "not registered");
        return -1;
    }
    x = 0;
    if (get_ll(reg, "interval_ms", &x) < 0) {
        Py_DECREF(reg);
        return -1;
    }
    Py_DECREF(reg);
    self->interval_ms = (long)x;
    cfg = PyObject_GetAttrString(state, "config");
    if (cfg == NULL)
        return -1;
    if (get_ll(cfg, "min_response_ms", &x) < 0) {
        Py_DECREF(cfg);
        return -1;
    }
    Py_DECREF(cfg);
    self->min_response_ms = (long)x;
    if (!self->has_deadline || (!self->answered && !self->has_respond)) {
        PyErr_SetString(PyExc_ValueError, "not a steady state");
        return -1;
    }
    return 0;
}

static int Steady_traverse(Steady *self, visitproc visit, void *arg)
{
    Py_VISIT(self->nonces);
    Py_VISIT(self->owner);
    Py_VISIT(self->counters);
    Py_VISIT(self->rtt_append);
    Py_VISIT(self->late_append);
    return 0;
}

static int Steady_clear(Steady *self)
{
    /* never while on an engine: the engine's reference keeps it alive */
    Py_CLEAR(self->nonces);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->rtt_append);
    Py_CLEAR(self->late_append);
    return 0;
}

static void Steady_dealloc(Steady *self)
{
    PyObject_GC_UnTrack(self);
    Steady_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* host._rto_ms */
static double rto_ms(const Steady *s)
{
    double interval = (double)s->interval_ms, rto, floor_ms;
    if (!s->has_srtt || s->rtt_count < c_rtt_before_adapting)
        return interval;
    rto = 4.0 * s->rttvar;
    rto = s->srtt + (1.0 >= rto ? 1.0 : rto);
    floor_ms = (double)s->min_response_ms;
    if (floor_ms > rto)  /* max(rto, floor): the first of equals */
        rto = floor_ms;
    return interval < rto ? interval : rto;  /* min(rto, interval) */
}

/* host._deadline for the steady state (connected, enabled, no action) */
double steady_next_at(const Steady *s)
{
    if (!s->answered && !s->judged && s->has_respond) {
        if (!s->has_probe)
            return s->respond_by;
        return s->respond_by < s->probe_at ? s->respond_by : s->probe_at;
    }
    return s->deadline;
}

/* ---- tick ---------------------------------------------------------------------- */

int steady_tick(Steady *self, double now, char *buf, Py_ssize_t *len)
{
    double rto, half;
    uint64_t counter;
    long long block;
    uint32_t nonce;
    unsigned slot;
    const unsigned char *d;
    int n;
    if (!self->answered && !self->judged && self->has_respond) {
        /* unanswered: the window of evidence (a CpuSample) is Python's */
        if (now >= (self->has_probe ? self->probe_at : self->respond_by))
            return TICK_PYTHON;
        return TICK_NONE;
    }
    if (now < self->deadline)
        return TICK_NONE;  /* early: no challenge due */
    counter = self->nonce_counter + 1;  /* & (2**64 - 1): uint64 wraps */
    block = (long long)(counter / 16);
    slot = (unsigned)(counter % 16);
    if (block != self->block || self->block < 0) {
        PyObject *b = PyLong_FromUnsignedLongLong(counter / 16), *digest;
        if (b == NULL)
            return TICK_ERROR;
        digest = PyObject_CallOneArg(self->nonces, b);
        Py_DECREF(b);
        if (digest == NULL)
            return TICK_ERROR;
        if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) != 64) {
            Py_DECREF(digest);
            PyErr_SetString(PyExc_ValueError, "nonces() must return 64 bytes");
            return TICK_ERROR;
        }
        memcpy(self->digest, PyBytes_AS_STRING(digest), 64);
        Py_DECREF(digest);
        self->block = block;
    }
    d = self->digest + 4 * slot;
    nonce = (((uint32_t)d[0] << 24) | ((uint32_t)d[1] << 16) | ((uint32_t)d[2] << 8)
             | (uint32_t)d[3]) & c_nonce_max;
    if (self->has_nonce && nonce == self->nonce)
        nonce ^= 1;  /* never repeat: a replayed answer must not count */
    rto = rto_ms(self) / 1000.0;
    self->sequence = self->sequence + 1;  /* & UINT32_MAX: uint32 wraps */
    self->nonce_counter = counter;
    self->has_previous = self->has_nonce;
    self->previous_nonce = self->nonce;
    self->has_nonce = 1;
    self->nonce = nonce;
    self->answered = 0;
    self->has_challenged = 1;
    self->challenged_at = now;
    /* the rhythm: from the deadline just served unless an interval late (host._on_tick) */
    if (!(now < self->deadline + (double)self->interval_ms / 1000.0))
        self->deadline = now;
    self->has_deadline = 1;
    self->deadline = self->deadline + (double)self->interval_ms / 1000.0;
    self->judged = 0;
    self->has_respond = 1;
    self->respond_by = now + rto;
    half = rto / 2.0;
    self->has_probe = 1;
    self->probe_at = (now + rto) - (0.010 < half ? 0.010 : half);
    n = snprintf(buf, CHALLENGE_MAX,
                 "\n{\"version\":%ld,\"revision\":%ld,\"msg_type\":\"challenge\","
                 "\"sequence\":%u,\"heartbeat_challenge\":%u}\n",
                 c_version, c_revision, (unsigned)self->sequence, (unsigned)nonce);
    *len = n;
    return TICK_CHALLENGE;
}

static PyObject *Steady_tick(Steady *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    char buf[CHALLENGE_MAX];
    Py_ssize_t n = 0;
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    switch (steady_tick(self, now, buf, &n)) {
    case TICK_ERROR:
        return NULL;
    case TICK_PYTHON:
        Py_RETURN_NONE;
    case TICK_NONE:
        return PyBytes_FromStringAndSize("", 0);
    default:
        return PyBytes_FromStringAndSize(buf, n);
    }
}

/* ---- answer: the strict JSON subset ---------------------------------------------- */

typedef struct {
    const char *p, *end;
} Cursor;

static void skip_ws(Cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r'))
        c->p++;
}

/* a string of printable ASCII without escapes; 0 if anything else */
static int scan_string(Cursor *c, const char **s, Py_ssize_t *len)
{
    const char *q;
    if (c->p >= c->end || *c->p != '"')
        return 0;
    q = ++c->p;
    while (c->p < c->end) {
        unsigned char ch = (unsigned char)*c->p;
        if (ch == '"') {
            *s = q;
            *len = c->p - q;
            c->p++;
            return 1;
        }
        if (ch < 0x20 || ch > 0x7e || ch == '\\')
            return 0;
        c->p++;
    }
    return 0;
}

/* a non-negative JSON integer of at most 18 digits; 0 if anything else */
static int scan_uint(Cursor *c, unsigned long long *out)
{
    unsigned long long v = 0;
    int digits = 0;
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
        return 0;
    if (*c->p == '0' && c->p + 1 < c->end && c->p[1] >= '0' && c->p[1] <= '9')
        return 0;  /* a leading zero: not JSON */
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        if (++digits > 18)
            return 0;
        v = v * 10 + (unsigned long long)(*c->p - '0');
        c->p++;
    }
    if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
        return 0;  /* a float */
    *out = v;
    return 1;
}

enum { K_VERSION, K_REVISION, K_MSG_TYPE, K_SEQUENCE, K_RESPONSE, K_HEALTH, K_ACTION, K_LOG, K_N };
static const char *const KEYS[K_N] = {"version", "revision", "msg_type", "sequence",
                                      "heartbeat_response", "heartbeat_health",
                                      "corrective_action", "log_msg"};
static const int KEY_IS_INT[K_N] = {1, 1, 0, 1, 1, 0, 0, 0};

static int eq(const char *s, Py_ssize_t len, const char *lit)
{
    return (Py_ssize_t)strlen(lit) == len && memcmp(s, lit, (size_t)len) == 0;
}

/* 1: a valid healthy challenge_response whose response is `nonce` */
static int parse_answer(const char *line, Py_ssize_t len, uint32_t nonce)
{
    Cursor c = {line, line + len};
    unsigned long long ints[K_N] = {0};
    const char *strs[K_N] = {0};
    Py_ssize_t lens[K_N] = {0};
    int seen[K_N] = {0}, k, i, ok;
    skip_ws(&c);
    if (c.p >= c.end || *c.p != '{')
        return 0;
    c.p++;
    skip_ws(&c);
    if (c.p < c.end && *c.p == '}')
        return 0;  /* {}: missing fields, Python words it */
    for (;;) {
        const char *key, *s;
        Py_ssize_t klen, slen;
        unsigned long long v;
        if (!scan_string(&c, &key, &klen))
            return 0;
        skip_ws(&c);
        if (c.p >= c.end || *c.p != ':')
            return 0;
        c.p++;
        skip_ws(&c);
        k = -1;
        for (i = 0; i < K_N; i++)
            if (eq(key, klen, KEYS[i])) {
                k = i;
                break;
            }
        if (k >= 0 && seen[k])
            return 0;  /* a duplicate: json keeps the last, Python decides */
        if (c.p < c.end && *c.p == '"') {
            if (!scan_string(&c, &s, &slen))
                return 0;
            if (k >= 0) {
                if (KEY_IS_INT[k])
                    return 0;
                strs[k] = s;
                lens[k] = slen;
                seen[k] = 1;
            }
        } else {
            if (!scan_uint(&c, &v))
                return 0;  /* a negative, float, true/false/null, array, object */
            if (k >= 0) {
                if (!KEY_IS_INT[k])
                    return 0;
                ints[k] = v;
                seen[k] = 1;
            }
        }
        skip_ws(&c);
        if (c.p >= c.end)
            return 0;
        if (*c.p == ',') {
            c.p++;
            skip_ws(&c);
            continue;
        }
        if (*c.p != '}')
            return 0;
        c.p++;
        break;
    }
    skip_ws(&c);
    if (c.p != c.end)
        return 0;
    for (i = 0; i < K_N; i++)
        if (!seen[i])
            return 0;
    if (!eq(strs[K_MSG_TYPE], lens[K_MSG_TYPE], "challenge_response")
        || ints[K_VERSION] != (unsigned long long)c_version
        || ints[K_REVISION] > UINT32_MAX || ints[K_SEQUENCE] > UINT32_MAX
        || ints[K_RESPONSE] != (unsigned long long)nonce
        || !eq(strs[K_HEALTH], lens[K_HEALTH], "healthy")
        || lens[K_LOG] > c_log_msg_max)
        return 0;
    ok = 0;
    for (i = 0; i < c_n_actions; i++)
        if (eq(strs[K_ACTION], lens[K_ACTION], c_actions[i]))
            ok = 1;
    return ok;
}

static int is_space(char ch)  /* bytes.isspace */
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\x0b' || ch == '\x0c';
}

int steady_answer(Steady *self, const char *data, Py_ssize_t size, double now, double *rtt_out)
{
    const char *p, *end, *line = NULL, *nl;
    Py_ssize_t line_len = 0;
    double rtt, sample;
    if (self->answered || self->judged || !self->has_challenged || !self->has_nonce)
        return 0;
    end = data + size;
    if (size == 0 || end[-1] != '\n')
        return 0;  /* a partial line: the decoder keeps it */
    /* LineDecoder.feed: blank lines are skipped; exactly one line with content */
    for (p = data; p < end; p = nl + 1) {
        const char *q;
        nl = memchr(p, '\n', (size_t)(end - p));
        for (q = p; q < nl && is_space(*q); q++)
            ;
        if (q == nl)
            continue;
        if (line != NULL)
            return 0;
        line = p;
        line_len = nl - p;
    }
    if (line == NULL || line_len > c_max_msg || !parse_answer(line, line_len, self->nonce))
        return 0;
    /* host._response, on time and not extended (the steady state's only answer) */
    rtt = (now - self->challenged_at) * 1000.0;
    sample = rtt;
    if (!self->has_srtt) {
        self->srtt = sample;
        self->rttvar = sample / 2.0;
        self->has_srtt = 1;
    } else {
        self->rttvar = 0.75 * self->rttvar + 0.25 * fabs(self->srtt - sample);
        self->srtt = 0.875 * self->srtt + 0.125 * sample;
    }
    self->rtt_count++;
    self->streak++;
    self->ontime_streak++;
    self->answered = 1;
    self->has_rtt = 1;
    self->rtt_ms = rtt;
    self->has_probe = 0;
    *rtt_out = rtt;
    return 1;
}

static PyObject *Steady_answer(Steady *self, PyObject *const *args, Py_ssize_t nargs)
{
    double now, rtt = 0.0;
    if (nargs != 2 || !PyBytes_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "answer(data: bytes, now: float)");
        return NULL;
    }
    now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (!steady_answer(self, PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), now, &rtt))
        Py_RETURN_NONE;
    return PyFloat_FromDouble(rtt);
}

/* ---- export --------------------------------------------------------------------- */

static PyObject *opt_f(int has, double v)
{
    if (!has)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(v);
}

static PyObject *opt_i(int has, uint32_t v)
{
    if (!has)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(v);
}

static PyObject *Steady_export(Steady *self, PyObject *unused)
{
    /* the HostState fields the steady state changes: evolve(state, **export()) */
    return Py_BuildValue(
        "{s:K,s:k,s:N,s:N,s:O,s:O,s:N,s:N,s:N,s:N,s:N,s:N,s:d,s:L,s:L,s:L,s:i}",
        "nonce_counter", (unsigned long long)self->nonce_counter,
        "sequence", (unsigned long)self->sequence,
        "nonce", opt_i(self->has_nonce, self->nonce),
        "previous_nonce", opt_i(self->has_previous, self->previous_nonce),
        "answered", self->answered ? Py_True : Py_False,
        "judged", self->judged ? Py_True : Py_False,
        "challenged_at", opt_f(self->has_challenged, self->challenged_at),
        "deadline", opt_f(self->has_deadline, self->deadline),
        "respond_by", opt_f(self->has_respond, self->respond_by),
        "probe_at", opt_f(self->has_probe, self->probe_at),
        "srtt_ms", opt_f(self->has_srtt, self->srtt),
        "rtt_ms", opt_f(self->has_rtt, self->rtt_ms),
        "rttvar_ms", self->rttvar,
        "rtt_count", self->rtt_count,
        "streak", self->streak,
        "ontime_streak", self->ontime_streak,
        "misses", 0);
}

static PyObject *Steady_next_at(Steady *self, void *closure)
{
    return PyFloat_FromDouble(steady_next_at(self));
}

static PyMethodDef Steady_methods[] = {
    {"tick", (PyCFunction)Steady_tick, METH_O,
     "tick(now) -> challenge bytes, b'' (none due) or None (the Python machine's tick)"},
    {"answer", (PyCFunction)(void (*)(void))Steady_answer, METH_FASTCALL,
     "answer(data, now) -> round trip in ms, or None (the Python machine's bytes)"},
    {"export", (PyCFunction)Steady_export, METH_NOARGS,
     "the HostState fields to evolve the Python machine's state with"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Steady_getset[] = {
    {"next_at", (getter)Steady_next_at, NULL, "when the session's timer is due", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject SteadyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nfvha.compute._steady.Steady",
    .tp_basicsize = sizeof(Steady),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A heartbeat session's steady state (see the module's docstring).",
    .tp_traverse = (traverseproc)Steady_traverse,
    .tp_clear = (inquiry)Steady_clear,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Steady_init,
    .tp_dealloc = (destructor)Steady_dealloc,
    .tp_methods = Steady_methods,
    .tp_getset = Steady_getset,
};

/* ---- module ------------------------------------------------------------------------ */

static PyObject *configure(PyObject *mod, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"version", "revision", "nonce_max", "log_msg_max",
                             "rtt_samples_before_adapting", "max_msg", "corrective_actions",
                             NULL};
    long version, revision, log_max, before;
    unsigned long nonce_max;
    Py_ssize_t max_msg, i, n;
    PyObject *actions, *seq;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "llkllnO", kwlist, &version, &revision,
                                     &nonce_max, &log_max, &before, &max_msg, &actions))
        return NULL;
    seq = PySequence_Fast(actions, "corrective_actions: a sequence of str");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_ACTIONS || version < 0 || revision < 0 || nonce_max > UINT32_MAX) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "configure: out of range");
        return NULL;
    }
    for (i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *s = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (s == NULL || len >= (Py_ssize_t)sizeof c_actions[0]) {
            Py_DECREF(seq);
            if (s != NULL)
                PyErr_SetString(PyExc_ValueError, "configure: corrective action too long");
            return NULL;
        }
        memcpy(c_actions[i], s, (size_t)len + 1);
    }
    Py_DECREF(seq);
    c_n_actions = (int)n;
    c_version = version;
    c_revision = revision;
    c_nonce_max = (uint32_t)nonce_max;
    c_log_msg_max = log_max;
    c_rtt_before_adapting = before;
    c_max_msg = max_msg;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_VARARGS | METH_KEYWORDS,
     "the protocol's constants (nfvha/compute/steady.py passes them)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_steady", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__steady(void)
{
    PyObject *m;
    if (PyType_Ready(&SteadyType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SteadyType);
    if (PyModule_AddObject(m, "Steady", (PyObject *)&SteadyType) < 0) {
        Py_DECREF(&SteadyType);
        Py_DECREF(m);
        return NULL;
    }
    if (steadyio_add_types(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
