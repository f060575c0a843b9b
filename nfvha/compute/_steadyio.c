/* The engine: the steady state's cycles over the guests' sockets, in C.
 *
 * compute/_steady.c takes the protocol of a steady session's cycle out of
 * Python; what remained per cycle was the I/O around it, all Python: a timer
 * entry fired and re-armed twice, the socket read through the loop's epoll
 * pass, the challenge written through the transport, a handful of method
 * calls each. At 1000 guests that was four fifths of the agent's user time.
 * An Engine holds the steady sessions of one event loop (the Python side,
 * compute/steadyloop.py, puts them on and takes them off) and runs their
 * cycles itself:
 *
 *   fire(now)        every session whose timer is due: steady_tick; a
 *                    challenge goes out with one send(2) on the session's
 *                    socket; its lateness goes to the session's samples; at
 *                    an unanswered challenge's window the socket is read
 *                    first (the answer may be waiting there);
 *   poll(epfd, max)  one epoll_wait(2) of the loop's guest sockets
 *                    (compute/guestio.py): an engine session's socket that
 *                    is only readable is read here (recv(2) of at most
 *                    read_size bytes, as the transport would) and an
 *                    expected answer taken (steady_answer); every other
 *                    event is returned for the Python transport to serve.
 *
 * A session leaves the engine, handed back to Python with what happened
 * (the input read, the bytes a send did not take, the tick the Python
 * machine must take), whenever the engine meets anything but the steady
 * cycle: the session's Python side then goes on exactly as if its own code
 * had met it. The engine never calls into the session while it runs, only
 * the session's Samples.append and its counters dict, so a pass cannot be
 * re-entered (tests/test_steady_engine_serves_steady_sessions.py).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "_steady.h"

#define MAX_EVENTS 4096

typedef struct Engine {
    PyObject_HEAD
    Steady **heap;          /* min-heap on `at`; each holds a reference */
    Py_ssize_t len, cap;
    Steady **by_fd;         /* fd -> its session (borrowed from the heap) */
    int fd_cap;
    Steady **due;           /* fire()'s scratch: the entries taken out */
    Py_ssize_t due_cap;
    Py_ssize_t read_size;
    char *rbuf;
    int busy;               /* in fire() or poll(): add/discard refused */
    unsigned long long fired, sent, answered, handed;
} Engine;

static PyObject *s_bytes_in;  /* interned "bytes_in" */

static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* what time.monotonic() reads on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- the heap -------------------------------------------------------------------- */

static void place(Engine *e, Py_ssize_t i, Steady *s)
{
    e->heap[i] = s;
    s->slot = i;
}

static void sift_up(Engine *e, Py_ssize_t i)
{
    Steady *s = e->heap[i];
    while (i > 0) {
        Py_ssize_t parent = (i - 1) / 2;
        if (!(s->at < e->heap[parent]->at))
            break;
        place(e, i, e->heap[parent]);
        i = parent;
    }
    place(e, i, s);
}

static void sift_down(Engine *e, Py_ssize_t i)
{
    Steady *s = e->heap[i];
    for (;;) {
        Py_ssize_t child = 2 * i + 1;
        if (child >= e->len)
            break;
        if (child + 1 < e->len && e->heap[child + 1]->at < e->heap[child]->at)
            child++;
        if (!(e->heap[child]->at < s->at))
            break;
        place(e, i, e->heap[child]);
        i = child;
    }
    place(e, i, s);
}

/* takes the entry out of the heap (the reference stays with the caller) */
static void heap_remove(Engine *e, Steady *s)
{
    Py_ssize_t i = s->slot;
    Steady *last = e->heap[--e->len];
    s->slot = -1;
    if (i == e->len)
        return;
    place(e, i, last);
    if (i > 0 && last->at < e->heap[(i - 1) / 2]->at)
        sift_up(e, i);
    else
        sift_down(e, i);
}

static void heap_push(Engine *e, Steady *s)
{
    e->heap[e->len++] = s;
    sift_up(e, e->len - 1);
}

/* off the engine for good: the session (a new reference) for Python */
static PyObject *detach(Engine *e, Steady *s)
{
    PyObject *owner = s->owner;
    if (s->slot >= 0)
        heap_remove(e, s);
    e->by_fd[s->fd] = NULL;
    s->engine = NULL;
    s->owner = NULL;
    Py_CLEAR(s->counters);
    Py_CLEAR(s->rtt_append);
    Py_CLEAR(s->late_append);
    Py_DECREF(s);  /* the engine's reference */
    e->handed++;
    return owner;
}

/* a sample for the session's Samples; a failure there is reported, not raised */
static void sample(PyObject *append, double value)
{
    PyObject *v = PyFloat_FromDouble(value), *r = NULL;
    if (v != NULL) {
        r = PyObject_CallOneArg(append, v);
        Py_DECREF(v);
    }
    if (r == NULL)
        PyErr_WriteUnraisable(append);
    Py_XDECREF(r);
}

static void count_bytes(PyObject *counters, Py_ssize_t n)
{
    PyObject *old = PyDict_GetItemWithError(counters, s_bytes_in), *add, *sum;
    if (old == NULL) {
        if (PyErr_Occurred())
            PyErr_WriteUnraisable(counters);
        return;
    }
    add = PyLong_FromSsize_t(n);
    sum = add != NULL ? PyNumber_Add(old, add) : NULL;
    Py_XDECREF(add);
    if (sum == NULL || PyDict_SetItem(counters, s_bytes_in, sum) < 0)
        PyErr_WriteUnraisable(counters);
    Py_XDECREF(sum);
}

/* ---- the type -------------------------------------------------------------------- */

static int Engine_init(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"read_size", NULL};
    Py_ssize_t read_size = 4096;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n", kwlist, &read_size))
        return -1;
    if (self->rbuf != NULL || self->heap != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "already initialised");
        return -1;
    }
    if (read_size < 1 || read_size > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "read_size out of range");
        return -1;
    }
    self->rbuf = PyMem_Malloc((size_t)read_size);
    if (self->rbuf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->read_size = read_size;
    return 0;
}

static int Engine_traverse(Engine *self, visitproc visit, void *arg)
{
    Py_ssize_t i;
    for (i = 0; i < self->len; i++)
        Py_VISIT(self->heap[i]);
    return 0;
}

static int Engine_clear(Engine *self)
{
    while (self->len > 0) {
        PyObject *owner = detach(self, self->heap[self->len - 1]);
        Py_XDECREF(owner);
    }
    return 0;
}

static void Engine_dealloc(Engine *self)
{
    PyObject_GC_UnTrack(self);
    Engine_clear(self);
    PyMem_Free(self->heap);
    PyMem_Free(self->by_fd);
    PyMem_Free(self->due);
    PyMem_Free(self->rbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t Engine_len(Engine *self)
{
    return self->len;
}

static int grow(Engine *e, int fd)
{
    if (e->len == e->cap) {
        Py_ssize_t cap = e->cap ? 2 * e->cap : 64;
        Steady **heap = PyMem_Realloc(e->heap, (size_t)cap * sizeof *heap);
        Steady **due = PyMem_Realloc(e->due, (size_t)cap * sizeof *due);
        if (heap != NULL)
            e->heap = heap;
        if (due != NULL)
            e->due = due;
        if (heap == NULL || due == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        e->cap = e->due_cap = cap;
    }
    if (fd >= e->fd_cap) {
        int cap = e->fd_cap ? e->fd_cap : 256;
        Steady **by_fd;
        while (cap <= fd)
            cap *= 2;
        by_fd = PyMem_Realloc(e->by_fd, (size_t)cap * sizeof *by_fd);
        if (by_fd == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memset(by_fd + e->fd_cap, 0, (size_t)(cap - e->fd_cap) * sizeof *by_fd);
        e->by_fd = by_fd;
        e->fd_cap = cap;
    }
    return 0;
}

static PyObject *Engine_add(Engine *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fast", "fd", "owner", "counters", "rtt_append", "late_append",
                             NULL};
    PyObject *fast, *owner, *counters, *rtt_append, *late_append;
    Steady *s;
    int fd;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!iOO!OO", kwlist, &SteadyType, &fast, &fd,
                                     &owner, &PyDict_Type, &counters, &rtt_append,
                                     &late_append))
        return NULL;
    s = (Steady *)fast;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "add() from inside a pass");
        return NULL;
    }
    if (s->engine != NULL) {
        PyErr_SetString(PyExc_ValueError, "already on an engine");
        return NULL;
    }
    if (fd < 0) {
        PyErr_SetString(PyExc_ValueError, "fd must not be negative");
        return NULL;
    }
    if (!PyCallable_Check(rtt_append) || !PyCallable_Check(late_append)) {
        PyErr_SetString(PyExc_TypeError, "rtt_append and late_append must be callable");
        return NULL;
    }
    if (grow(self, fd) < 0)
        return NULL;
    if (self->by_fd[fd] != NULL) {
        PyErr_Format(PyExc_ValueError, "fd %d is served already", fd);
        return NULL;
    }
    Py_INCREF(s);
    Py_INCREF(owner);
    Py_INCREF(counters);
    Py_INCREF(rtt_append);
    Py_INCREF(late_append);
    s->owner = owner;
    s->counters = counters;
    s->rtt_append = rtt_append;
    s->late_append = late_append;
    s->engine = self;
    s->fd = fd;
    s->at = steady_next_at(s);
    self->by_fd[fd] = s;
    heap_push(self, s);
    Py_RETURN_NONE;
}

static PyObject *Engine_discard(Engine *self, PyObject *fast)
{
    Steady *s;
    PyObject *owner;
    if (!PyObject_TypeCheck(fast, &SteadyType)) {
        PyErr_SetString(PyExc_TypeError, "discard(fast: Steady)");
        return NULL;
    }
    s = (Steady *)fast;
    if (s->engine != self)
        Py_RETURN_FALSE;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "discard() from inside a pass");
        return NULL;
    }
    owner = detach(self, s);
    self->handed--;  /* taken off by Python, not handed back */
    Py_XDECREF(owner);
    Py_RETURN_TRUE;
}

/* (owner, kind, payload) onto `out`; steals `owner` and `payload` */
static int hand(PyObject *out, PyObject *owner, int kind, PyObject *payload)
{
    PyObject *item;
    if (payload == NULL) {
        Py_DECREF(owner);
        return -1;
    }
    item = Py_BuildValue("(NiN)", owner, kind, payload);
    if (item == NULL)
        return -1;
    if (PyList_Append(out, item) < 0) {
        Py_DECREF(item);
        return -1;
    }
    Py_DECREF(item);
    return 0;
}

enum { HAND_TICK = 0, HAND_WRITE = 1, HAND_ERROR = 2, HAND_READ = 3 };

/* An unanswered challenge reached its window: its answer may be sitting in
 * the socket, unread only because the loop ran late (the read pass comes
 * after the timers when both are due). Read first, as the Python machine
 * would be given the bytes before the tick: 1 the answer was taken, 0 the
 * tick is Python's (nothing to read), -1 handed back with what was read (or
 * a Python error is set, `*out` NULL). */
static int read_first(Engine *e, Steady *s, double now, PyObject **out)
{
    double rtt = 0.0;
    ssize_t n = recv(s->fd, e->rbuf, (size_t)e->read_size, MSG_DONTWAIT);
    *out = NULL;
    if (n < 0)
        return 0;  /* nothing there (or an error the transport's own read meets) */
    if (n > 0 && steady_answer(s, e->rbuf, (Py_ssize_t)n, now, &rtt)) {
        e->answered++;
        count_bytes(s->counters, (Py_ssize_t)n);
        sample(s->rtt_append, rtt);
        return 1;
    }
    *out = PyBytes_FromStringAndSize(e->rbuf, (Py_ssize_t)n);
    return -1;
}

static PyObject *Engine_fire(Engine *self, PyObject *arg)
{
    double now = PyFloat_AsDouble(arg);
    PyObject *out;
    Py_ssize_t n_due = 0, i;
    int failed = 0;
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "fire() from inside a pass");
        return NULL;
    }
    out = PyList_New(0);
    if (out == NULL)
        return NULL;
    /* every due entry out first: one re-armed in the past waits for the next pass */
    while (self->len > 0 && self->heap[0]->at <= now) {
        Steady *s = self->heap[0];
        heap_remove(self, s);
        self->due[n_due++] = s;
    }
    self->busy = 1;
    for (i = 0; i < n_due; i++) {
        Steady *s = self->due[i];
        char buf[CHALLENGE_MAX];
        Py_ssize_t len = 0, sent;
        int r;
        if (failed) {  /* out of memory for the list: the rest stay on, due */
            heap_push(self, s);
            continue;
        }
        self->fired++;
        r = steady_tick(s, now, buf, &len);
        if (r == TICK_NONE) {
            s->at = steady_next_at(s);
            heap_push(self, s);
            continue;
        }
        if (r == TICK_PYTHON) {
            PyObject *data;
            int got = read_first(self, s, now, &data);
            if (got == 1) {
                s->at = steady_next_at(s);
                heap_push(self, s);
            } else if (got == 0) {
                failed = hand(out, detach(self, s), HAND_TICK, Py_NewRef(Py_None)) < 0;
            } else {
                failed = hand(out, detach(self, s), HAND_READ, data) < 0;
            }
            continue;
        }
        if (r == TICK_ERROR) {
            PyObject *type, *exc, *tb;
            PyErr_Fetch(&type, &exc, &tb);
            PyErr_NormalizeException(&type, &exc, &tb);
            if (exc != NULL && tb != NULL)
                PyException_SetTraceback(exc, tb);
            Py_XDECREF(type);
            Py_XDECREF(tb);
            if (exc == NULL)
                exc = Py_NewRef(Py_None);
            failed = hand(out, detach(self, s), HAND_ERROR, exc) < 0;
            continue;
        }
        if (now >= s->at)
            sample(s->late_append, (now - s->at) * 1000.0);
        sent = send(s->fd, buf, (size_t)len, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent == len) {
            self->sent++;
            s->at = steady_next_at(s);
            heap_push(self, s);
            continue;
        }
        /* the kernel did not take it all (a guest that does not read, an error):
         * the transport buffers the rest or fails the channel, as it would have */
        if (sent < 0)
            sent = 0;
        failed = hand(out, detach(self, s), HAND_WRITE,
                      PyBytes_FromStringAndSize(buf + sent, len - sent)) < 0;
    }
    self->busy = 0;
    if (failed) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyObject *Engine_poll(Engine *self, PyObject *const *args, Py_ssize_t nargs)
{
    struct epoll_event evs[256];
    int epfd, maxevents, nev, i, failed = 0;
    PyObject *handed = NULL, *events = NULL, *result;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "poll(epfd: int, maxevents: int)");
        return NULL;
    }
    epfd = (int)PyLong_AsLong(args[0]);
    maxevents = (int)PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "poll() from inside a pass");
        return NULL;
    }
    if (maxevents < 1)
        maxevents = 1;
    if (maxevents > (int)(sizeof evs / sizeof evs[0]))
        maxevents = (int)(sizeof evs / sizeof evs[0]);
    nev = epoll_wait(epfd, evs, maxevents, 0);
    if (nev < 0) {
        if (errno != EINTR)
            return PyErr_SetFromErrno(PyExc_OSError);
        nev = 0;
    }
    handed = PyList_New(0);
    events = PyList_New(0);
    if (handed == NULL || events == NULL)
        goto error;
    self->busy = 1;
    for (i = 0; i < nev && !failed; i++) {
        int fd = evs[i].data.fd;
        uint32_t ev = evs[i].events;
        Steady *s = (fd >= 0 && fd < self->fd_cap) ? self->by_fd[fd] : NULL;
        PyObject *data = NULL, *item;
        if (s != NULL && ev == EPOLLIN) {
            ssize_t n = recv(fd, self->rbuf, (size_t)self->read_size, MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                continue;
            if (n > 0) {
                double rtt = 0.0;
                if (steady_answer(s, self->rbuf, (Py_ssize_t)n, monotonic(), &rtt)) {
                    self->answered++;
                    count_bytes(s->counters, (Py_ssize_t)n);
                    sample(s->rtt_append, rtt);
                    /* the next challenge's time: never earlier than the answer window */
                    heap_remove(self, s);
                    s->at = steady_next_at(s);
                    heap_push(self, s);
                    continue;
                }
            }
            /* anything else is the Python side's: the bytes read (b"": end of
             * stream) or, after an error, nothing read (its own read meets it) */
            data = n >= 0 ? PyBytes_FromStringAndSize(self->rbuf, (Py_ssize_t)n)
                          : Py_NewRef(Py_None);
            if (data == NULL) {
                failed = 1;
                break;
            }
        }
        if (s != NULL) {
            PyObject *owner = detach(self, s);
            failed = PyList_Append(handed, owner) < 0;
            Py_DECREF(owner);
        }
        item = Py_BuildValue("(iIN)", fd, (unsigned)ev, data != NULL ? data : Py_NewRef(Py_None));
        if (item == NULL || PyList_Append(events, item) < 0)
            failed = 1;
        Py_XDECREF(item);
    }
    self->busy = 0;
    if (failed)
        goto error;
    result = PyTuple_Pack(2, handed, events);
    Py_DECREF(handed);
    Py_DECREF(events);
    return result;
error:
    Py_XDECREF(handed);
    Py_XDECREF(events);
    return NULL;
}

static PyObject *Engine_next_at(Engine *self, void *closure)
{
    if (self->len == 0)
        Py_RETURN_NONE;
    return PyFloat_FromDouble(self->heap[0]->at);
}

static PyObject *Engine_counters(Engine *self, void *closure)
{
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:n}", "fired", self->fired, "sent", self->sent,
                         "answered", self->answered, "handed", self->handed, "sessions",
                         self->len);
}

static PyObject *Engine_holds(Engine *self, PyObject *fast)
{
    if (!PyObject_TypeCheck(fast, &SteadyType)) {
        PyErr_SetString(PyExc_TypeError, "holds(fast: Steady)");
        return NULL;
    }
    return PyBool_FromLong(((Steady *)fast)->engine == self);
}

static PyMethodDef Engine_methods[] = {
    {"add", (PyCFunction)(void (*)(void))Engine_add, METH_VARARGS | METH_KEYWORDS,
     "add(fast, fd, owner, counters, rtt_append, late_append): serve this steady session"},
    {"discard", (PyCFunction)Engine_discard, METH_O,
     "discard(fast) -> whether it was on this engine (it is not now)"},
    {"holds", (PyCFunction)Engine_holds, METH_O, "holds(fast) -> whether this engine serves it"},
    {"fire", (PyCFunction)Engine_fire, METH_O,
     "fire(now) -> [(owner, kind, payload)] handed back: 0 the Python machine's tick, "
     "1 bytes the socket did not take, 2 an exception, 3 bytes read (b'': end of stream)"},
    {"poll", (PyCFunction)(void (*)(void))Engine_poll, METH_FASTCALL,
     "poll(epfd, maxevents) -> (owners handed back, [(fd, events, bytes read or None)])"},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Engine_getset[] = {
    {"next_at", (getter)Engine_next_at, NULL, "the earliest timer, or None", NULL},
    {"counters", (getter)Engine_counters, NULL, "what the engine did, for stats", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

static PySequenceMethods Engine_as_sequence = {.sq_length = (lenfunc)Engine_len};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nfvha.compute._steady.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The steady sessions of one event loop, run over their sockets "
              "(see compute/_steadyio.c).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_traverse = (traverseproc)Engine_traverse,
    .tp_clear = (inquiry)Engine_clear,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
    .tp_as_sequence = &Engine_as_sequence,
};

int steadyio_add_types(PyObject *module)
{
    s_bytes_in = PyUnicode_InternFromString("bytes_in");
    if (s_bytes_in == NULL || PyType_Ready(&EngineType) < 0)
        return -1;
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(module, "Engine", (PyObject *)&EngineType) < 0) {
        Py_DECREF(&EngineType);
        return -1;
    }
    return 0;
}
