/*
 * The optional C accelerator of resilience._deadline: the deadline's hot part.
 *
 * DeadlineCore is the base of ``deadline`` when this module is built: it is made, entered
 * and left exactly as ``_deadline._PurePython`` is (the same slots, the same rules), without
 * a Python frame for each step. The clock is the process default in force (read from the
 * holder ``_clock.DEFAULT`` at each entry, so ``virtual_time()`` swaps it), with a direct
 * CLOCK_MONOTONIC read when that default is ``time.monotonic`` itself. An inner deadline
 * never extends an outer one. Everything else (async, decorating, messages) stays Python.
 *
 * RateStart (below) is the memory rate limiter's start with room, the other hot part.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <structmember.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
/* 3.11: read the caller's code and offset off the interpreter's own frame, as Cython does,
 * instead of making a frame object for it (PyEval_GetFrame) at each deadline made. */
#define Py_BUILD_CORE 1
#include <internal/pycore_frame.h>
#undef Py_BUILD_CORE
#define HAVE_INTERPRETER_FRAME 1
#endif

#if defined(__linux__)
#include <time.h>
#define HAVE_FAST_MONOTONIC 1
#endif

typedef struct {
    PyObject *current;   /* the ContextVar holding the innermost deadline */
    PyObject *holder;    /* _clock.DEFAULT: its ``monotonic`` is the default clock's */
    PyObject *seconds;   /* the slow-path check of a length: ints, timedeltas, inf, errors */
    PyObject *monotonic; /* time.monotonic, for the fast path */
    PyObject *monotonic_name;
    double maximum;      /* MAX_DURATION: a float above it takes the slow path */
    Py_ssize_t slot;     /* the offset of the holder's ``monotonic`` slot, or 0: getattr */
} State;

static State state = {NULL, NULL, NULL, NULL, NULL, 1e7, 0};

typedef struct {
    PyObject_HEAD
    double at;
    double seconds;
    PyObject *owner; /* NULL: this deadline governs itself */
    PyObject *code;
    PyObject *token;
    int lasti;
} Core;

static PyTypeObject CoreType;

static int
configured(void)
{
    if (state.current == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "resilience._speedups.configure() was not called");
        return 0;
    }
    return 1;
}

#ifdef HAVE_FAST_MONOTONIC
/* time.monotonic() without its call: CLOCK_MONOTONIC, as it computes it (integer
 * nanoseconds, then one division). -1 with OSError set on failure. Every part's clock. */
static int
monotonic_seconds(double *now)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    *now = (double)ns / 1e9;
    return 0;
}
#endif

/* Seconds on the default clock in force; -1.0 with an exception set on failure. */
static double
clock_now(void)
{
    PyObject *monotonic;
    if (state.slot) { /* the holder's slot, read as its member descriptor would */
        monotonic = *(PyObject **)((char *)state.holder + state.slot);
        if (monotonic == NULL) {
            PyErr_SetString(PyExc_AttributeError, "the default clock holder has no monotonic");
            return -1.0;
        }
        Py_INCREF(monotonic);
    }
    else if ((monotonic = PyObject_GetAttr(state.holder, state.monotonic_name)) == NULL) {
        return -1.0;
    }
#ifdef HAVE_FAST_MONOTONIC
    if (monotonic == state.monotonic) {
        double now;
        Py_DECREF(monotonic);
        return monotonic_seconds(&now) < 0 ? -1.0 : now;
    }
#endif
    PyObject *reading = PyObject_CallNoArgs(monotonic);
    Py_DECREF(monotonic);
    if (reading == NULL) {
        return -1.0;
    }
    double now = PyFloat_AsDouble(reading);
    Py_DECREF(reading);
    return now;
}

static int
set_length(Core *self, PyObject *value)
{
    if (PyFloat_CheckExact(value)) {
        double seconds = PyFloat_AS_DOUBLE(value);
        if (seconds >= 0.0 && seconds <= state.maximum) { /* NaN fails too */
            self->seconds = seconds;
            return 0;
        }
    }
    PyObject *checked = PyObject_CallOneArg(state.seconds, value);
    if (checked == NULL) {
        return -1;
    }
    double seconds = PyFloat_AsDouble(checked);
    Py_DECREF(checked);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    self->seconds = seconds;
    return 0;
}

/* Where a deadline is made: the caller's code and offset (the line only when asked). */
static void
capture_origin(Core *self)
{
#ifdef HAVE_INTERPRETER_FRAME
    _PyInterpreterFrame *frame = PyThreadState_GET()->cframe->current_frame;
    if (frame != NULL && !_PyFrame_IsIncomplete(frame)) {
        self->code = Py_NewRef((PyObject *)frame->f_code);
        self->lasti = _PyInterpreterFrame_LASTI(frame) * (int)sizeof(_Py_CODEUNIT);
    }
#else
    PyFrameObject *frame = PyEval_GetFrame(); /* borrowed */
    if (frame != NULL) {
        self->code = (PyObject *)PyFrame_GetCode(frame);
        self->lasti = PyFrame_GetLasti(frame);
    }
#endif
}

static PyObject *
Core_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (!configured()) {
        return NULL;
    }
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "deadline() takes no keyword arguments");
        return NULL;
    }
    if (PyTuple_GET_SIZE(args) != 1) {
        PyErr_Format(PyExc_TypeError,
                     "deadline() takes exactly one argument (seconds), %zd given",
                     PyTuple_GET_SIZE(args));
        return NULL;
    }
    Core *self = (Core *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->at = Py_HUGE_VAL;
    if (set_length(self, PyTuple_GET_ITEM(args, 0)) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    capture_origin(self);
    return (PyObject *)self;
}

/* deadline(seconds) without the argument tuple and __init__ call of type.__call__. */
static PyObject *
Core_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        /* type.__call__ (Core_new) raises the usual error */
        return _PyObject_MakeTpCall(PyThreadState_GET(), type, args, nargs, kwnames);
    }
    if (!configured()) {
        return NULL;
    }
    PyTypeObject *cls = (PyTypeObject *)type;
    Core *self = (Core *)cls->tp_alloc(cls, 0);
    if (self == NULL) {
        return NULL;
    }
    self->at = Py_HUGE_VAL;
    if (set_length(self, args[0]) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    capture_origin(self);
    return (PyObject *)self;
}

static int
Core_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return 0; /* all done in __new__ */
}

static int
Core_traverse(Core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner); /* a subclass's traverse visits its heap type */
    Py_VISIT(self->code);
    Py_VISIT(self->token);
    return 0;
}

static int
Core_clear(Core *self)
{
    Py_CLEAR(self->owner);
    Py_CLEAR(self->code);
    Py_CLEAR(self->token);
    return 0;
}

static void
Core_dealloc(Core *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    type->tp_free((PyObject *)self); /* a subclass's dealloc releases its heap type */
}

static PyObject *
Core_enter(Core *self, PyObject *Py_UNUSED(ignored))
{
    double at = clock_now();
    if (at == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    at += self->seconds;
    PyObject *outer;
    if (PyContextVar_Get(state.current, NULL, &outer) < 0) {
        return NULL;
    }
    PyObject *owner = NULL;
    if (outer != NULL && outer != Py_None) {
        double outer_at;
        if (PyObject_TypeCheck(outer, &CoreType)) {
            outer_at = ((Core *)outer)->at;
        }
        else { /* pragma: no cover - the variable only ever holds deadlines */
            PyObject *value = PyObject_GetAttrString(outer, "at");
            outer_at = value == NULL ? -1.0 : PyFloat_AsDouble(value);
            Py_XDECREF(value);
            if (outer_at == -1.0 && PyErr_Occurred()) {
                Py_DECREF(outer);
                return NULL;
            }
        }
        if (outer_at <= at) { /* an inner deadline never extends an outer one */
            at = outer_at;
            if (PyObject_TypeCheck(outer, &CoreType)) {
                owner = ((Core *)outer)->owner;
                owner = owner == NULL ? outer : owner;
                Py_INCREF(owner);
            }
            else if ((owner = PyObject_GetAttrString(outer, "owner")) == NULL) {
                Py_DECREF(outer);
                return NULL;
            }
        }
    }
    Py_XDECREF(outer);
    PyObject *token = PyContextVar_Set(state.current, (PyObject *)self);
    if (token == NULL) {
        Py_XDECREF(owner);
        return NULL;
    }
    self->at = at;
    Py_XSETREF(self->owner, owner);
    Py_XSETREF(self->token, token);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *
Core_exit(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (self->token == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "deadline left without being entered");
        return NULL;
    }
    if (PyContextVar_Reset(state.current, self->token) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Core_fresh(Core *self, PyObject *Py_UNUSED(ignored))
{
    PyTypeObject *type = Py_TYPE(self);
    Core *scope = (Core *)type->tp_alloc(type, 0);
    if (scope == NULL) {
        return NULL;
    }
    scope->at = Py_HUGE_VAL;
    scope->seconds = self->seconds;
    scope->code = Py_XNewRef(self->code);
    scope->lasti = self->lasti;
    return (PyObject *)scope;
}

static PyObject *
Core_get_owner(Core *self, void *Py_UNUSED(closure))
{
    if (self->token == NULL) { /* as the pure-Python slot: set on entering */
        PyErr_SetString(PyExc_AttributeError, "owner: the deadline was never entered");
        return NULL;
    }
    PyObject *owner = self->owner == NULL ? (PyObject *)self : self->owner;
    return Py_NewRef(owner);
}

static int
Core_set_owner(Core *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "owner cannot be deleted");
        return -1;
    }
    Py_XSETREF(self->owner, value == (PyObject *)self ? NULL : Py_NewRef(value));
    return 0;
}

static PyObject *
Core_get_code(Core *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->code == NULL ? Py_None : self->code);
}

static int
Core_set_code(Core *self, PyObject *value, void *Py_UNUSED(closure))
{
    if (value == NULL || value == Py_None) {
        Py_CLEAR(self->code);
        return 0;
    }
    if (!PyCode_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "_code must be a code object or None");
        return -1;
    }
    Py_XSETREF(self->code, Py_NewRef(value));
    return 0;
}

static PyObject *
Core_get_token(Core *self, void *Py_UNUSED(closure))
{
    if (self->token == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_token: the deadline was never entered");
        return NULL;
    }
    return Py_NewRef(self->token);
}

static PyMethodDef Core_methods[] = {
    {"_fresh", (PyCFunction)Core_fresh, METH_NOARGS,
     "A deadline of the same length and origin, for one call of a decorated callable."},
    {NULL},
};

static PyMemberDef Core_members[] = {
    {"at", T_DOUBLE, offsetof(Core, at), 0, "The effective end on the clock."},
    {"seconds", T_DOUBLE, offsetof(Core, seconds), 0, "The length given."},
    {"_lasti", T_INT, offsetof(Core, lasti), 0, "The offset of the instruction that made it."},
    {NULL},
};

static PyGetSetDef Core_getset[] = {
    {"owner", (getter)Core_get_owner, (setter)Core_set_owner,
     "The deadline whose end ``at`` is (this one or an outer one).", NULL},
    {"_code", (getter)Core_get_code, (setter)Core_set_code, "The code that made it.", NULL},
    {"_token", (getter)Core_get_token, NULL, "The variable's token of the last entry.", NULL},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resilience._speedups.DeadlineCore",
    .tp_doc = "deadline's base in C: made, entered and left as _deadline._PurePython is.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = Core_new,
    .tp_init = Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
};

/*
 * __enter__ and __exit__: a ``with`` statement looks both up on the instance, and a C
 * method would make (and free) a garbage-collected bound method for each, which costs
 * as much as the rest of entering. These descriptors bind to a small object kept on a
 * free list instead, which calls the method straight through vectorcall.
 */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Core *target;
} Bound;

typedef struct {
    PyObject_HEAD
    vectorcallfunc call; /* what a Bound made by this descriptor runs */
    const char *name;
    const char *doc;
} Method;

static PyTypeObject BoundType;

#define FREE_BOUND 16
static Bound *free_bound[FREE_BOUND];
static int free_bound_count = 0;

static PyObject *
bound_enter(PyObject *bound, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "__enter__() takes no arguments");
        return NULL;
    }
    return Core_enter(((Bound *)bound)->target, NULL);
}

static PyObject *
bound_exit(PyObject *bound, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) {
        PyErr_SetString(PyExc_TypeError, "__exit__() takes no keyword arguments");
        return NULL;
    }
    return Core_exit(((Bound *)bound)->target, args, PyVectorcall_NARGS(nargsf));
}

static void
Bound_dealloc(Bound *self)
{
    Py_CLEAR(self->target);
    if (free_bound_count < FREE_BOUND) {
        free_bound[free_bound_count++] = self;
    }
    else {
        PyObject_Free(self);
    }
}

static PyTypeObject BoundType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resilience._speedups.BoundMethod",
    .tp_doc = "A deadline's __enter__ or __exit__, bound.",
    .tp_basicsize = sizeof(Bound),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Bound, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dealloc = (destructor)Bound_dealloc,
};

static PyObject *
Method_get(Method *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    if (!PyObject_TypeCheck(obj, &CoreType)) {
        PyErr_Format(PyExc_TypeError, "%s needs a deadline", self->name);
        return NULL;
    }
    Bound *bound;
    if (free_bound_count > 0) {
        bound = free_bound[--free_bound_count];
        (void)PyObject_INIT(bound, &BoundType);
    }
    else if ((bound = PyObject_New(Bound, &BoundType)) == NULL) {
        return NULL;
    }
    bound->vectorcall = self->call;
    bound->target = (Core *)Py_NewRef(obj);
    return (PyObject *)bound;
}

static PyObject *
Method_call(Method *self, PyObject *args, PyObject *kwargs)
{
    /* unbound: DeadlineCore.__enter__(d), DeadlineCore.__exit__(d, None, None, None) */
    if (PyTuple_GET_SIZE(args) < 1) {
        PyErr_Format(PyExc_TypeError, "%s needs a deadline", self->name);
        return NULL;
    }
    PyObject *bound = Method_get(self, PyTuple_GET_ITEM(args, 0), NULL);
    if (bound == NULL) {
        return NULL;
    }
    PyObject *rest = PyTuple_GetSlice(args, 1, PyTuple_GET_SIZE(args));
    PyObject *result = rest == NULL ? NULL : PyObject_Call(bound, rest, kwargs);
    Py_XDECREF(rest);
    Py_DECREF(bound);
    return result;
}

static PyObject *
Method_get_doc(Method *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->doc);
}

static PyObject *
Method_get_name(Method *self, void *Py_UNUSED(closure))
{
    return PyUnicode_FromString(self->name);
}

static PyGetSetDef Method_getset[] = {
    {"__doc__", (getter)Method_get_doc, NULL, NULL, NULL},
    {"__name__", (getter)Method_get_name, NULL, NULL, NULL},
    {NULL},
};

static PyTypeObject MethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resilience._speedups.Method",
    .tp_doc = "A deadline's __enter__ or __exit__.",
    .tp_basicsize = sizeof(Method),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_descr_get = (descrgetfunc)Method_get,
    .tp_call = (ternaryfunc)Method_call,
    .tp_getset = Method_getset,
};

static Method enter_method = {
    PyObject_HEAD_INIT(&MethodType) bound_enter, "__enter__", "Enter the deadline's block."};
static Method exit_method = {
    PyObject_HEAD_INIT(&MethodType) bound_exit, "__exit__",
    "Leave the deadline's block (never raises for an overrun)."};

static PyObject *
configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(current, default, seconds, maximum, cls) takes 5 arguments");
        return NULL;
    }
    PyObject *cls = args[4];
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, &CoreType) ||
        ((PyTypeObject *)cls)->tp_new != CoreType.tp_new ||
        ((PyTypeObject *)cls)->tp_init != CoreType.tp_init) {
        PyErr_SetString(PyExc_TypeError,
                        "configure(): cls must subclass DeadlineCore, keeping its __new__ and "
                        "__init__");
        return NULL;
    }
    if (!PyContextVar_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "configure(): current must be a ContextVar");
        return NULL;
    }
    double maximum = PyFloat_AsDouble(args[3]);
    if (maximum == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    Py_XSETREF(state.current, Py_NewRef(args[0]));
    Py_XSETREF(state.holder, Py_NewRef(args[1]));
    Py_XSETREF(state.seconds, Py_NewRef(args[2]));
    state.maximum = maximum;
    /* a slotted holder: find its ``monotonic`` slot's offset once */
    state.slot = 0;
    PyObject *descr = _PyType_Lookup(Py_TYPE(args[1]), state.monotonic_name); /* borrowed */
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(member->flags & READONLY)) {
            state.slot = member->offset;
        }
    }
    /* calls of cls go straight to Core_vectorcall (cls keeps DeadlineCore's __new__ and
     * __init__, checked above; the field is never inherited by a further subclass) */
    ((PyTypeObject *)cls)->tp_vectorcall = Core_vectorcall;
    Py_RETURN_NONE;
}

/*
 * RateStart: ``MemoryRateBackend.reserve``'s start with room (``_rate/state.py``), in C.
 *
 * The same steps as the Python inline path, in the same order, under the backend's own
 * lock: read the clock (the policy's, else the default in force), and when no window is
 * open, the limit has no burst, both logs have room and nobody is reserved ahead, append
 * now to both logs, and when the log's length before was a multiple of 128 call the given
 * trim with now (still under the lock). Calling it answers 0.0 (started) or None when that
 * case does not apply (nothing done: the Python path decides); anything it does not know
 * exactly (a reading or an entry that is no float) is left to Python too.
 */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *state;   /* the RateState: its log and starts are read at each call */
    PyObject *window;  /* the MemoryWindowBackend: its end is read at each call */
    PyObject *clock;   /* the policy's clock, or None: the default in force */
    PyObject *holder;  /* _clock.DEFAULT, whose ``clock`` is the default */
    PyObject *system;  /* SYSTEM_CLOCK: read as time.monotonic() is, without a call */
    PyObject *acquire; /* the backend lock's bound acquire and release */
    PyObject *release;
    PyObject *trim;    /* called with now every 128 starts: drop what left the window */
    Py_ssize_t rate;
    Py_ssize_t log_slot, starts_slot, end_slot, clock_slot; /* member offsets, or 0 */
} RateStart;

static PyObject *rate_names[5]; /* "log", "starts", "end", "clock", "append" */
static PyObject *deque_type;    /* collections.deque */
static PyObject *deque_append;  /* deque.append, called directly on exact deques */
static PyObject *rate_zero;     /* 0.0: the answer for a start now */

/* The offset of *obj*'s slot *name* (an object member of its type, writable when *writable*
 * is set), or 0: read it with getattr. Shared by the rate and throttle parts. */
static Py_ssize_t
member_offset(PyObject *obj, PyObject *name, int writable)
{
    PyObject *descr = _PyType_Lookup(Py_TYPE(obj), name); /* borrowed */
    if (descr != NULL && Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type == T_OBJECT_EX && !(writable && (member->flags & READONLY))) {
            return member->offset;
        }
    }
    return 0;
}


/* A new reference to obj.<name>, through its slot when there is one. */
static PyObject *
read_member(PyObject *obj, Py_ssize_t slot, PyObject *name)
{
    if (slot) {
        PyObject *value = *(PyObject **)((char *)obj + slot);
        if (value != NULL) {
            return Py_NewRef(value);
        }
    }
    return PyObject_GetAttr(obj, name);
}

static int
append_to(PyObject *log, PyObject *item)
{
    PyObject *done;
    if ((PyObject *)Py_TYPE(log) == deque_type) {
        PyObject *args[2] = {log, item};
        done = PyObject_Vectorcall(deque_append, args, 2, NULL);
    }
    else { /* a subclass: its own append */
        done = PyObject_CallMethodOneArg(log, rate_names[4], item);
    }
    if (done == NULL) {
        return -1;
    }
    Py_DECREF(done);
    return 0;
}

/* The clock's reading as a new float reference; Py_None (new) when it is no float. */
static PyObject *
rate_now(RateStart *self)
{
    PyObject *clock = self->clock;
    if (clock == Py_None) {
        clock = read_member(self->holder, self->clock_slot, rate_names[3]);
        if (clock == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(clock);
    }
    PyObject *reading;
#ifdef HAVE_FAST_MONOTONIC
    if (clock == self->system) {
        double now;
        Py_DECREF(clock);
        return monotonic_seconds(&now) < 0 ? NULL : PyFloat_FromDouble(now);
    }
#endif
    reading = PyObject_CallMethodNoArgs(clock, state.monotonic_name);
    Py_DECREF(clock);
    if (reading != NULL && !PyFloat_CheckExact(reading)) {
        Py_SETREF(reading, Py_NewRef(Py_None));
    }
    return reading;
}

/* The start itself, with the lock held: 0.0 or None (new references), or NULL. */
static PyObject *
rate_start_locked(RateStart *self)
{
    PyObject *now = rate_now(self);
    if (now == NULL || now == Py_None) {
        return now;
    }
    PyObject *answer = NULL, *end = NULL, *log = NULL, *starts = NULL;
    double at = PyFloat_AS_DOUBLE(now);
    end = read_member(self->window, self->end_slot, rate_names[2]);
    if (end == NULL) {
        goto done;
    }
    if (!PyFloat_CheckExact(end) || !(PyFloat_AS_DOUBLE(end) <= at)) {
        answer = Py_NewRef(Py_None); /* a window open (or unknown): Python decides */
        goto done;
    }
    if ((log = read_member(self->state, self->log_slot, rate_names[0])) == NULL ||
        (starts = read_member(self->state, self->starts_slot, rate_names[1])) == NULL) {
        goto done;
    }
    Py_ssize_t count = PyObject_Size(log), started = PyObject_Size(starts);
    if (count < 0 || started < 0) {
        goto done;
    }
    if (count >= self->rate || started >= self->rate) {
        answer = Py_NewRef(Py_None);
        goto done;
    }
    if (count) {
        PyObject *last = PySequence_GetItem(log, count - 1);
        if (last == NULL) {
            goto done;
        }
        int ahead = !PyFloat_CheckExact(last) || !(PyFloat_AS_DOUBLE(last) <= at);
        Py_DECREF(last);
        if (ahead) {
            answer = Py_NewRef(Py_None);
            goto done;
        }
    }
    if (append_to(log, now) < 0 || append_to(starts, now) < 0) {
        goto done;
    }
    if ((count & 127) == 0) {
        PyObject *trimmed = PyObject_CallOneArg(self->trim, now);
        if (trimmed == NULL) {
            goto done;
        }
        Py_DECREF(trimmed);
    }
    answer = Py_NewRef(rate_zero);
done:
    Py_DECREF(now);
    Py_XDECREF(end);
    Py_XDECREF(log);
    Py_XDECREF(starts);
    return answer;
}

static PyObject *
RateStart_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RateStart *self = (RateStart *)op;
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "RateStart() takes no arguments");
        return NULL;
    }
    PyObject *held = PyObject_CallNoArgs(self->acquire);
    if (held == NULL) {
        return NULL;
    }
    Py_DECREF(held);
    PyObject *answer = rate_start_locked(self);
    PyObject *type, *value, *traceback; /* a failure's exception waits while the lock goes */
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *released = PyObject_CallNoArgs(self->release);
    if (released == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        Py_XDECREF(answer);
        return NULL;
    }
    Py_DECREF(released);
    PyErr_Restore(type, value, traceback);
    return answer;
}

static PyObject *
RateStart_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"state", "window", "clock", "holder", "system",
                               "acquire", "release", "trim", NULL};
    PyObject *st, *window, *clock, *holder, *system, *acquire, *release, *trim;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOOOO:RateStart", keywords, &st,
                                     &window, &clock, &holder, &system, &acquire, &release,
                                     &trim)) {
        return NULL;
    }
    PyObject *rate = PyObject_GetAttrString(st, "rate");
    if (rate == NULL) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(rate);
    Py_DECREF(rate);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *spaced = PyObject_GetAttrString(st, "spaced");
    if (spaced == NULL) {
        return NULL;
    }
    int is_spaced = PyObject_IsTrue(spaced);
    Py_DECREF(spaced);
    if (is_spaced < 0) {
        return NULL;
    }
    if (is_spaced) {
        PyErr_SetString(PyExc_ValueError, "RateStart(): a limit with a burst has no inline start");
        return NULL;
    }
    RateStart *self = (RateStart *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = Py_NewRef(st);
    self->window = Py_NewRef(window);
    self->clock = Py_NewRef(clock);
    self->holder = Py_NewRef(holder);
    self->system = Py_NewRef(system);
    self->acquire = Py_NewRef(acquire);
    self->release = Py_NewRef(release);
    self->trim = Py_NewRef(trim);
    self->rate = limit;
    self->vectorcall = RateStart_vectorcall;
    self->log_slot = member_offset(st, rate_names[0], 0);
    self->starts_slot = member_offset(st, rate_names[1], 0);
    self->end_slot = member_offset(window, rate_names[2], 0);
    self->clock_slot = member_offset(holder, rate_names[3], 0);
    return (PyObject *)self;
}

static int
RateStart_traverse(RateStart *self, visitproc visit, void *arg)
{
    Py_VISIT(self->state);
    Py_VISIT(self->window);
    Py_VISIT(self->clock);
    Py_VISIT(self->holder);
    Py_VISIT(self->system);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->trim);
    return 0;
}

static int
RateStart_clear(RateStart *self)
{
    Py_CLEAR(self->state);
    Py_CLEAR(self->window);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->holder);
    Py_CLEAR(self->system);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->trim);
    return 0;
}

static void
RateStart_dealloc(RateStart *self)
{
    PyObject_GC_UnTrack(self);
    RateStart_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RateStartType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resilience._speedups.RateStart",
    .tp_doc = "MemoryRateBackend.reserve's start with room, in C: 0.0, or None (not that case).",
    .tp_basicsize = sizeof(RateStart),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(RateStart, vectorcall),
    .tp_new = RateStart_new,
    .tp_dealloc = (destructor)RateStart_dealloc,
    .tp_traverse = (traverseproc)RateStart_traverse,
    .tp_clear = (inquiry)RateStart_clear,
    .tp_call = PyVectorcall_Call,
};

/* ---- @throttled: the accept tally and the closed-path runner (everything prefixed throttle_) ----
 *
 * ThrottleTally is the C twin of ``_throttle.state.Tally``: the accepts of the current bucket,
 * counted without a lock (the GIL makes ``accept`` atomic), the bucket's end (``until``) and
 * ``calm`` (2: no draw is needed; 1: none while the bucket is current; 0: draw under the lock).
 * ThrottleRunner is the C twin of the fast path of ``ThrottleLayer.build_sync``'s runner: with
 * the switches on, the layer's counts current and calm, it calls the next runner (or the
 * function) and counts the accept, with no Python frame; anything else goes to the Python
 * runner it was given (``slow``), which does the whole job. */

typedef struct {
    PyObject_HEAD
    double until;    /* the end of the current bucket: accepts before it count here */
    long long count; /* the accepts of the current bucket not yet taken */
    int calm;        /* 2: nothing to draw; 1: nothing while now < until; 0: draw */
} ThrottleTally;

static PyTypeObject ThrottleTallyType;

static PyObject *throttle_monotonic; /* time.monotonic: read as CLOCK_MONOTONIC directly */
static PyObject *throttle_name_tally, *throttle_name_epoch, *throttle_name_n,
    *throttle_name_active, *throttle_name_monotonic;

static PyObject *
throttle_tally_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "ThrottleTally() takes no arguments");
        return NULL;
    }
    ThrottleTally *self = (ThrottleTally *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->until = -Py_HUGE_VAL;
        self->count = 0;
        self->calm = 0;
    }
    return (PyObject *)self;
}

static PyObject *
throttle_tally_accept(ThrottleTally *self, PyObject *Py_UNUSED(ignored))
{
    self->count++;
    Py_RETURN_NONE;
}

static PyObject *
throttle_tally_peek(ThrottleTally *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLongLong(self->count);
}

static PyObject *
throttle_tally_take(ThrottleTally *self, PyObject *Py_UNUSED(ignored))
{
    long long count = self->count;
    self->count = 0;
    return PyLong_FromLongLong(count);
}

static PyMethodDef throttle_tally_methods[] = {
    {"accept", (PyCFunction)throttle_tally_accept, METH_NOARGS,
     "Count one accept in the current bucket (atomic: no lock)."},
    {"peek", (PyCFunction)throttle_tally_peek, METH_NOARGS,
     "Return the accepts counted since the last take."},
    {"take", (PyCFunction)throttle_tally_take, METH_NOARGS,
     "Return the accepts counted since the last take, and start again from 0."},
    {NULL},
};

static PyMemberDef throttle_tally_members[] = {
    {"until", T_DOUBLE, offsetof(ThrottleTally, until), 0, "The end of the current bucket."},
    {"calm", T_INT, offsetof(ThrottleTally, calm), 0,
     "2: no draw is needed; 1: none while the bucket is current; 0: draw."},
    {NULL},
};

static PyTypeObject ThrottleTallyType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resilience._speedups.ThrottleTally",
    .tp_basicsize = sizeof(ThrottleTally),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The accepts of a throttle's current bucket, its end, and whether to draw.",
    .tp_new = throttle_tally_new,
    .tp_methods = throttle_tally_methods,
    .tp_members = throttle_tally_members,
};

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *layer;     /* its ``_tally`` and ``_epoch`` */
    PyObject *epoch;     /* ``_rate.layer.EPOCH``: its ``n`` */
    PyObject *switches;  /* ``_config.state``: its ``active`` */
    PyObject *source;    /* the policy's clock, or ``_clock.DEFAULT``: its ``monotonic`` */
    PyObject *call_next; /* NULL: innermost, call the function itself */
    PyObject *slow;      /* the Python runner: everything but the fast path */
    PyObject *failed;    /* failed(exc): count an exception's outcome */
    PyObject *late;      /* late(now): count an accept after its bucket ended */
    Py_ssize_t tally_at, epoch_at, n_at, active_at, monotonic_at; /* slot offsets; 0: getattr */
} ThrottleRunner;

static PyTypeObject ThrottleRunnerType;

/* *obj*'s attribute *name* (a new reference), read from its slot when it has one. */
static PyObject *
throttle_get(PyObject *obj, Py_ssize_t at, PyObject *name)
{
    if (at) {
        PyObject *value = *(PyObject **)((char *)obj + at);
        if (value == NULL) {
            PyErr_SetObject(PyExc_AttributeError, name);
            return NULL;
        }
        return Py_NewRef(value);
    }
    return PyObject_GetAttr(obj, name);
}

/* Seconds on the runner's clock into *now*; -1 with an exception set on failure. */
static int
throttle_now(ThrottleRunner *self, double *now)
{
    PyObject *monotonic = throttle_get(self->source, self->monotonic_at, throttle_name_monotonic);
    if (monotonic == NULL) {
        return -1;
    }
#ifdef HAVE_FAST_MONOTONIC
    if (monotonic == throttle_monotonic) {
        Py_DECREF(monotonic);
        return monotonic_seconds(now);
    }
#endif
    PyObject *reading = PyObject_CallNoArgs(monotonic);
    Py_DECREF(monotonic);
    if (reading == NULL) {
        return -1;
    }
    double value = PyFloat_AsDouble(reading);
    Py_DECREF(reading);
    if (value == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    *now = value;
    return 0;
}

/* 1: the fast path may run (*tally* set to a new reference); 0: the Python runner; -1: error. */
static int
throttle_gate(ThrottleRunner *self, ThrottleTally **tally)
{
    PyObject *active = throttle_get(self->switches, self->active_at, throttle_name_active);
    if (active == NULL) {
        return -1;
    }
    Py_DECREF(active); /* a bool: still alive */
    if (active != Py_True) {
        return 0;
    }
    PyObject *seen = throttle_get(self->layer, self->epoch_at, throttle_name_epoch);
    if (seen == NULL) {
        return -1;
    }
    PyObject *n = throttle_get(self->epoch, self->n_at, throttle_name_n);
    Py_DECREF(seen);
    if (n == NULL) {
        return -1;
    }
    Py_DECREF(n);
    if (seen != n) { /* the layer set its ``_epoch`` from ``EPOCH.n``: the same object */
        return 0;
    }
    PyObject *found = throttle_get(self->layer, self->tally_at, throttle_name_tally);
    if (found == NULL) {
        return -1;
    }
    if (!Py_IS_TYPE(found, &ThrottleTallyType)) { /* a remote store, or the Python twin */
        Py_DECREF(found);
        return 0;
    }
    ThrottleTally *counts = (ThrottleTally *)found;
    if (counts->calm != 2) {
        double now;
        if (counts->calm != 1) {
            Py_DECREF(found);
            return 0;
        }
        if (throttle_now(self, &now) < 0) {
            Py_DECREF(found);
            return -1;
        }
        if (!(now < counts->until)) {
            Py_DECREF(found);
            return 0;
        }
    }
    *tally = counts;
    return 1;
}

static PyObject *
throttle_runner_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    ThrottleRunner *self = (ThrottleRunner *)op;
    if (PyVectorcall_NARGS(nargsf) != 4 || kwnames != NULL || !PyTuple_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[3])) {
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    ThrottleTally *tally = NULL;
    int gate = throttle_gate(self, &tally);
    if (gate < 0) {
        return NULL;
    }
    if (gate == 0) {
        return PyObject_Vectorcall(self->slow, args, nargsf, kwnames);
    }
    PyObject *result;
    if (self->call_next == NULL) { /* innermost: the function itself (no copy of empty kwargs) */
        PyObject *kwargs = PyDict_GET_SIZE(args[3]) ? args[3] : NULL;
        result = PyObject_Call(args[0], args[2], kwargs);
    }
    else {
        result = PyObject_Vectorcall(self->call_next, args, 4, NULL);
    }
    if (result == NULL) {
        if (PyErr_ExceptionMatches(PyExc_Exception)) { /* control flow is never counted */
            PyObject *type, *value, *traceback;
            PyErr_Fetch(&type, &value, &traceback);
            PyErr_NormalizeException(&type, &value, &traceback);
            if (traceback != NULL) {
                PyException_SetTraceback(value, traceback);
            }
            PyObject *counted = PyObject_CallOneArg(self->failed, value);
            if (counted == NULL) { /* as in an ``except`` block: the new error, in its context */
                PyObject *type2, *value2, *traceback2;
                PyErr_Fetch(&type2, &value2, &traceback2);
                PyErr_NormalizeException(&type2, &value2, &traceback2);
                if (traceback2 != NULL) {
                    PyException_SetTraceback(value2, traceback2);
                }
                PyException_SetContext(value2, value); /* steals value */
                Py_DECREF(type);
                Py_XDECREF(traceback);
                PyErr_Restore(type2, value2, traceback2);
            }
            else {
                Py_DECREF(counted);
                PyErr_Restore(type, value, traceback);
            }
        }
        Py_DECREF(tally);
        return NULL;
    }
    double now;
    if (throttle_now(self, &now) < 0) {
        Py_DECREF(tally);
        Py_DECREF(result);
        return NULL;
    }
    if (now < tally->until) {
        tally->count++;
    }
    else { /* the bucket ended: the backend rolls the window under its lock */
        PyObject *at = PyFloat_FromDouble(now);
        PyObject *counted = at == NULL ? NULL : PyObject_CallOneArg(self->late, at);
        Py_XDECREF(at);
        if (counted == NULL) {
            Py_DECREF(tally);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(counted);
    }
    Py_DECREF(tally);
    return result;
}

static PyObject *
throttle_runner_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *layer, *epoch, *switches, *source, *call_next, *slow, *failed, *late;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0) {
        PyErr_SetString(PyExc_TypeError, "ThrottleRunner() takes positional arguments only");
        return NULL;
    }
    if (!PyArg_UnpackTuple(args, "ThrottleRunner", 8, 8, &layer, &epoch, &switches, &source,
                           &call_next, &slow, &failed, &late)) {
        return NULL;
    }
    if (!PyCallable_Check(slow) || !PyCallable_Check(failed) || !PyCallable_Check(late) ||
        (call_next != Py_None && !PyCallable_Check(call_next))) {
        PyErr_SetString(PyExc_TypeError,
                        "ThrottleRunner(): call_next (or None), slow, failed and late must be "
                        "callable");
        return NULL;
    }
    ThrottleRunner *self = (ThrottleRunner *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = throttle_runner_vectorcall;
    self->layer = Py_NewRef(layer);
    self->epoch = Py_NewRef(epoch);
    self->switches = Py_NewRef(switches);
    self->source = Py_NewRef(source);
    self->call_next = call_next == Py_None ? NULL : Py_NewRef(call_next);
    self->slow = Py_NewRef(slow);
    self->failed = Py_NewRef(failed);
    self->late = Py_NewRef(late);
    self->tally_at = member_offset(layer, throttle_name_tally, 1);
    self->epoch_at = member_offset(layer, throttle_name_epoch, 1);
    self->n_at = member_offset(epoch, throttle_name_n, 1);
    self->active_at = member_offset(switches, throttle_name_active, 1);
    self->monotonic_at = member_offset(source, throttle_name_monotonic, 1);
    return (PyObject *)self;
}

static PyObject *
throttle_runner_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    return PyVectorcall_Call(self, args, kwargs);
}

static int
throttle_runner_traverse(ThrottleRunner *self, visitproc visit, void *arg)
{
    Py_VISIT(self->layer);
    Py_VISIT(self->epoch);
    Py_VISIT(self->switches);
    Py_VISIT(self->source);
    Py_VISIT(self->call_next);
    Py_VISIT(self->slow);
    Py_VISIT(self->failed);
    Py_VISIT(self->late);
    return 0;
}

static int
throttle_runner_clear(ThrottleRunner *self)
{
    Py_CLEAR(self->layer);
    Py_CLEAR(self->epoch);
    Py_CLEAR(self->switches);
    Py_CLEAR(self->source);
    Py_CLEAR(self->call_next);
    Py_CLEAR(self->slow);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->late);
    return 0;
}

static void
throttle_runner_dealloc(ThrottleRunner *self)
{
    PyObject_GC_UnTrack(self);
    throttle_runner_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject ThrottleRunnerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resilience._speedups.ThrottleRunner",
    .tp_basicsize = sizeof(ThrottleRunner),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "@throttled's closed path in C: call and count the accept; else the Python runner.",
    .tp_new = throttle_runner_new,
    .tp_call = throttle_runner_call,
    .tp_vectorcall_offset = offsetof(ThrottleRunner, vectorcall),
    .tp_traverse = (traverseproc)throttle_runner_traverse,
    .tp_clear = (inquiry)throttle_runner_clear,
    .tp_dealloc = (destructor)throttle_runner_dealloc,
};

/* Ready the throttle's types and add them to *module*; -1 with an exception on failure. */
static int
throttle_init(PyObject *module)
{
    if (PyType_Ready(&ThrottleTallyType) < 0 || PyType_Ready(&ThrottleRunnerType) < 0) {
        return -1;
    }
    PyObject *time = PyImport_ImportModule("time");
    if (time == NULL) {
        return -1;
    }
    throttle_monotonic = PyObject_GetAttrString(time, "monotonic");
    Py_DECREF(time);
    if (throttle_monotonic == NULL ||
        (throttle_name_tally = PyUnicode_InternFromString("_tally")) == NULL ||
        (throttle_name_epoch = PyUnicode_InternFromString("_epoch")) == NULL ||
        (throttle_name_n = PyUnicode_InternFromString("n")) == NULL ||
        (throttle_name_active = PyUnicode_InternFromString("active")) == NULL ||
        (throttle_name_monotonic = PyUnicode_InternFromString("monotonic")) == NULL) {
        return -1;
    }
    if (PyModule_AddObjectRef(module, "ThrottleTally", (PyObject *)&ThrottleTallyType) < 0 ||
        PyModule_AddObjectRef(module, "ThrottleRunner", (PyObject *)&ThrottleRunnerType) < 0) {
        return -1;
    }
    return 0;
}

/*
 * af_: the lease start of a watched @bounded memory pool (resilience._bounded.pool's
 * ``lease_begin``, whose pure-Python twin is ``_lease_begin``): the next id of the pool
 * module's shared counter, the default clock's reading, and ``leases[id] = start``, in one
 * call instead of three. The clock is read as ``clock_now`` reads it (the holder's
 * ``monotonic``; CLOCK_MONOTONIC directly when that is ``time.monotonic`` itself).
 */

static PyObject *af_lease_ids = NULL; /* _bounded.pool.LEASE_IDS: an itertools.count */
static PyObject *af_holder = NULL;    /* _clock.DEFAULT */

static double
af_now(void)
{
    PyObject *monotonic = PyObject_GetAttr(af_holder, state.monotonic_name);
    if (monotonic == NULL) {
        return -1.0;
    }
#ifdef HAVE_FAST_MONOTONIC
    if (monotonic == state.monotonic) {
        double now;
        Py_DECREF(monotonic);
        return monotonic_seconds(&now) < 0 ? -1.0 : now;
    }
#endif
    PyObject *reading = PyObject_CallNoArgs(monotonic);
    Py_DECREF(monotonic);
    if (reading == NULL) {
        return -1.0;
    }
    double now = PyFloat_AsDouble(reading);
    Py_DECREF(reading);
    return now;
}

static PyObject *
af_configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "af_configure(lease_ids, holder) takes 2 arguments");
        return NULL;
    }
    if (!PyIter_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "af_configure(): lease_ids must be an iterator");
        return NULL;
    }
    Py_XSETREF(af_lease_ids, Py_NewRef(args[0]));
    Py_XSETREF(af_holder, Py_NewRef(args[1]));
    Py_RETURN_NONE;
}

static PyObject *
af_lease_begin(PyObject *module, PyObject *leases)
{
    if (af_lease_ids == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "resilience._speedups.af_configure() was not called");
        return NULL;
    }
    if (!PyDict_Check(leases)) {
        PyErr_SetString(PyExc_TypeError, "af_lease_begin(): leases must be a dict");
        return NULL;
    }
    double now = af_now();
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *lease = PyIter_Next(af_lease_ids);
    if (lease == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "af_lease_begin(): the lease ids ran out");
        }
        return NULL;
    }
    PyObject *start = PyFloat_FromDouble(now);
    if (start == NULL || PyDict_SetItem(leases, lease, start) < 0) {
        Py_XDECREF(start);
        Py_DECREF(lease);
        return NULL;
    }
    Py_DECREF(start);
    return lease;
}

/* ---- weighted @rate_limited: the start with room of a call's units (prefix rate_weighted_) ----
 *
 * RateWeightedStart is the C twin of ``_rate.state.WeightedStart``: called with a call's
 * positional arguments (a tuple) and keywords (a dict), it works out the call's cost (the
 * fixed cost, else the cost callable called with those arguments; an answer that is no whole
 * number in [1, rate] goes to the layer's check, which raises), then, under the backend's lock,
 * starts its units inline as ``RateStart`` starts one: no window open, both logs with room for
 * them (at most ``rate - cost`` entries each), nobody reserved ahead. A call of cost c appends
 * c copies of now to both logs, as ``RateState`` counts units. It answers None (or (now, cost),
 * when made with ``stamp``) when it started the call, else the checked cost: the Python path decides
 * (a reading or an entry that is no float, a window, no room). When the logs' length crossed a
 * multiple of 128 it calls the RateStart's trim with now, still under the lock, as it does. */

static PyObject *rate_weighted_one; /* the int 1, compared by identity first */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    RateStart *start;   /* the backend's RateStart: its state, window, clock and lock */
    PyObject *estimate; /* the cost callable (unused with a fixed cost) */
    PyObject *check;    /* the layer's check of a bad answer: raises */
    Py_ssize_t fixed;   /* the fixed cost, or 0: call estimate */
    int stamp;          /* answer now (a float) when started, not None */
} RateWeightedStart;

/* The cost of a call as a checked C integer (1..rate), or -1 with an exception set. */
static Py_ssize_t
rate_weighted_cost(RateWeightedStart *self, PyObject *args, PyObject *kwargs)
{
    PyObject *answer;
    if (self->fixed) {
        if (self->fixed >= 1 && self->fixed <= self->start->rate) {
            return self->fixed;
        }
        answer = PyLong_FromSsize_t(self->fixed);
    }
    else if (kwargs != NULL && PyDict_GET_SIZE(kwargs)) {
        answer = PyObject_VectorcallDict(self->estimate, &PyTuple_GET_ITEM(args, 0),
                                         PyTuple_GET_SIZE(args), kwargs);
    }
    else {
        answer = PyObject_Vectorcall(self->estimate, &PyTuple_GET_ITEM(args, 0),
                                     PyTuple_GET_SIZE(args), NULL);
    }
    if (answer == NULL) {
        return -1;
    }
    for (int pass = 0;; pass++) {
        if (answer == rate_weighted_one && self->start->rate >= 1) {
            Py_DECREF(answer); /* the usual cost, compared by identity (CPython shares it) */
            return 1;
        }
        if (PyLong_CheckExact(answer)) {
            long long units;
            int overflow = 0;
#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
            if (Py_SIZE(answer) == 1) { /* one positive digit (3.11's layout): no call */
                units = (long long)((PyLongObject *)answer)->ob_digit[0];
            }
            else
#endif
            {
                units = PyLong_AsLongLongAndOverflow(answer, &overflow);
            }
            if (!overflow && units >= 1 && units <= (long long)self->start->rate) {
                Py_DECREF(answer);
                return (Py_ssize_t)units;
            }
        }
        if (pass) { /* the check returned a bad answer itself */
            PyErr_Format(PyExc_ValueError, "a cost check answered %R, not a whole number in "
                         "[1, %zd]", answer, self->start->rate);
            Py_DECREF(answer);
            return -1;
        }
        /* the layer's check raises for a bad answer; were it to return, check that too */
        PyObject *checked = PyObject_CallOneArg(self->check, answer);
        Py_DECREF(answer);
        if (checked == NULL) {
            return -1;
        }
        answer = checked;
    }
}

/* The start of *units*, with the lock held: 1 started, 0 Python decides, -1 error. */
static int
rate_weighted_locked(RateWeightedStart *self, Py_ssize_t units, PyObject **now_out)
{
    RateStart *rs = self->start;
    PyObject *now = rate_now(rs);
    if (now == NULL) {
        return -1;
    }
    if (now == Py_None) {
        Py_DECREF(now);
        return 0;
    }
    int result = -1;
    PyObject *end = NULL, *log = NULL, *starts = NULL;
    double at = PyFloat_AS_DOUBLE(now);
    if ((end = read_member(rs->window, rs->end_slot, rate_names[2])) == NULL) {
        goto done;
    }
    if (!PyFloat_CheckExact(end) || !(PyFloat_AS_DOUBLE(end) <= at)) {
        result = 0;
        goto done;
    }
    if ((log = read_member(rs->state, rs->log_slot, rate_names[0])) == NULL ||
        (starts = read_member(rs->state, rs->starts_slot, rate_names[1])) == NULL) {
        goto done;
    }
    Py_ssize_t count = PyObject_Size(log), started = PyObject_Size(starts);
    if (count < 0 || started < 0) {
        goto done;
    }
    Py_ssize_t room = rs->rate - units;
    if (count > room || started > room) {
        result = 0;
        goto done;
    }
    if (count) {
        PyObject *last = PySequence_GetItem(log, count - 1);
        if (last == NULL) {
            goto done;
        }
        int ahead = !PyFloat_CheckExact(last) || !(PyFloat_AS_DOUBLE(last) <= at);
        Py_DECREF(last);
        if (ahead) {
            result = 0;
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < units; i++) {
        if (append_to(log, now) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < units; i++) {
        if (append_to(starts, now) < 0) {
            goto done;
        }
    }
    if (((count + units - 1) & ~(Py_ssize_t)127) >= count) { /* a multiple of 128 crossed */
        PyObject *trimmed = PyObject_CallOneArg(rs->trim, now);
        if (trimmed == NULL) {
            goto done;
        }
        Py_DECREF(trimmed);
    }
    *now_out = Py_NewRef(now);
    result = 1;
done:
    Py_DECREF(now);
    Py_XDECREF(end);
    Py_XDECREF(log);
    Py_XDECREF(starts);
    return result;
}

static PyObject *
rate_weighted_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    RateWeightedStart *self = (RateWeightedStart *)op;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames)) ||
        !(PyTuple_CheckExact(args[0]) || PyTuple_Check(args[0])) ||
        !(PyDict_CheckExact(args[1]) || args[1] == Py_None || PyDict_Check(args[1]))) {
        PyErr_SetString(PyExc_TypeError, "RateWeightedStart() takes (args: tuple, kwargs: dict)");
        return NULL;
    }
    Py_ssize_t units = rate_weighted_cost(self, args[0], args[1] == Py_None ? NULL : args[1]);
    if (units < 0) {
        return NULL;
    }
    PyObject *held = PyObject_CallNoArgs(self->start->acquire);
    if (held == NULL) {
        return NULL;
    }
    Py_DECREF(held);
    PyObject *now = NULL;
    int started = rate_weighted_locked(self, units, &now);
    PyObject *type, *value, *traceback; /* a failure's exception waits while the lock goes */
    PyErr_Fetch(&type, &value, &traceback);
    PyObject *released = PyObject_CallNoArgs(self->start->release);
    if (released == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
        Py_XDECREF(now);
        return NULL;
    }
    Py_DECREF(released);
    PyErr_Restore(type, value, traceback);
    if (started < 0) {
        Py_XDECREF(now);
        return NULL;
    }
    if (!started) {
        return PyLong_FromSsize_t(units);
    }
    if (self->stamp) {
        PyObject *cost = PyLong_FromSsize_t(units), *pair = NULL;
        if (cost != NULL) {
            pair = PyTuple_Pack(2, now, cost);
            Py_DECREF(cost);
        }
        Py_DECREF(now);
        return pair;
    }
    Py_DECREF(now);
    Py_RETURN_NONE;
}

static PyObject *
rate_weighted_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"start", "estimate", "fixed", "check", "stamp", NULL};
    PyObject *start, *estimate, *check;
    Py_ssize_t fixed;
    int stamp;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OnOp:RateWeightedStart", keywords,
                                     &RateStartType, &start, &estimate, &fixed, &check, &stamp)) {
        return NULL;
    }
    if (fixed < 0) {
        PyErr_SetString(PyExc_ValueError, "RateWeightedStart(): fixed must be >= 0");
        return NULL;
    }
    RateWeightedStart *self = (RateWeightedStart *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->start = (RateStart *)Py_NewRef(start);
    self->estimate = Py_NewRef(estimate);
    self->check = Py_NewRef(check);
    self->fixed = fixed;
    self->stamp = stamp;
    self->vectorcall = rate_weighted_vectorcall;
    return (PyObject *)self;
}

static int
rate_weighted_traverse(RateWeightedStart *self, visitproc visit, void *arg)
{
    Py_VISIT(self->start);
    Py_VISIT(self->estimate);
    Py_VISIT(self->check);
    return 0;
}

static int
rate_weighted_clear(RateWeightedStart *self)
{
    Py_CLEAR(self->start);
    Py_CLEAR(self->estimate);
    Py_CLEAR(self->check);
    return 0;
}

static void
rate_weighted_dealloc(RateWeightedStart *self)
{
    PyObject_GC_UnTrack(self);
    rate_weighted_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RateWeightedStartType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resilience._speedups.RateWeightedStart",
    .tp_doc = "A weighted call's cost and its start with room, in C: the cost when Python decides.",
    .tp_basicsize = sizeof(RateWeightedStart),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(RateWeightedStart, vectorcall),
    .tp_new = rate_weighted_new,
    .tp_dealloc = (destructor)rate_weighted_dealloc,
    .tp_traverse = (traverseproc)rate_weighted_traverse,
    .tp_clear = (inquiry)rate_weighted_clear,
    .tp_call = PyVectorcall_Call,
};

static int
rate_weighted_init(PyObject *module)
{
    if (PyType_Ready(&RateWeightedStartType) < 0) {
        return -1;
    }
    if (rate_weighted_one == NULL && (rate_weighted_one = PyLong_FromLong(1)) == NULL) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "RateWeightedStart", (PyObject *)&RateWeightedStartType);
}

/* ---- CallSink: RollingMetrics' call tap, counting each traced call where it ends ------------
 *
 * ``@traced`` gives every tap one tuple (name, elapsed_ns, failed, ended_ns). The sink counts
 * it at once into its name's cell: the slice index (ended_ns // width), calls, failures and a
 * latency histogram (bins by bisection over the bounds, as RollingMetrics' own), so nothing is
 * kept per call and nothing is left to count later. When a name's calls move on to a new slice
 * the cell's counts become a record (name, index, calls, failures, ((bin, count), ...)) in a
 * list; ``take()`` returns those and every cell counted since, and starts them anew. A call it
 * does not take (ended_ns -1, a value that is no C int64, a name past ``most`` cells) goes to
 * ``spill`` (the metrics' queue, counted in Python). The GIL is held throughout: a take and a
 * tap never interleave. ``resilience.telemetry._rolling.PyCallSink`` is the pure-Python twin. */

typedef struct {
    PyObject *name;
    Py_ssize_t number; /* its place in the sink's cells */
    long long index;
    long long calls;
    long long failures;
    int dirty;
    long long hist[];
} SinkCell;

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *names;    /* dict: name -> its cell's number (an int) */
    PyObject *records;  /* list of finished records, oldest first */
    PyObject *spill;    /* called with the tuple of a call the sink does not take */
    PyObject *last;     /* the name counted last (strong), and its cell */
    SinkCell *last_cell;
    SinkCell **cells;
    Py_ssize_t *dirty_list;
    Py_ssize_t count;   /* cells made */
    Py_ssize_t most;    /* cells at most */
    Py_ssize_t dirty;   /* cells counted since the last take */
    long long *bounds;
    Py_ssize_t top;     /* bounds: bins 0..top */
    long long width;
} CallSink;

static PyObject *
sink_record(CallSink *self, SinkCell *cell)
{
    /* The cell's counts as a record, and the cell emptied. */
    Py_ssize_t used = 0;
    for (Py_ssize_t i = 0; i <= self->top; i++) {
        used += cell->hist[i] != 0;
    }
    PyObject *bins = PyTuple_New(used);
    if (bins == NULL) {
        return NULL;
    }
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i <= self->top; i++) {
        if (cell->hist[i] == 0) {
            continue;
        }
        PyObject *pair = Py_BuildValue("(nL)", i, cell->hist[i]);
        if (pair == NULL) {
            Py_DECREF(bins);
            return NULL;
        }
        PyTuple_SET_ITEM(bins, at++, pair);
        cell->hist[i] = 0;
    }
    PyObject *record = Py_BuildValue("(OLLLN)", cell->name, cell->index, cell->calls,
                                     cell->failures, bins);
    cell->calls = cell->failures = 0;
    cell->dirty = 0;
    return record;
}

static int
sink_finish(CallSink *self, SinkCell *cell)
{
    /* A dirty cell's calls move on to a newer slice: its record goes to the list. */
    PyObject *record = sink_record(self, cell);
    if (record == NULL) {
        return -1;
    }
    int failed = PyList_Append(self->records, record);
    Py_DECREF(record);
    return failed;
}

static SinkCell *
sink_cell(CallSink *self, PyObject *name)
{
    /* The name's cell (made on first sight), or NULL: past ``most`` (no error) or an error. */
    PyObject *found = PyDict_GetItemWithError(self->names, name);
    if (found != NULL) {
        return self->cells[PyLong_AsSsize_t(found)];
    }
    if (PyErr_Occurred() || self->count >= self->most) {
        return NULL;
    }
    SinkCell *cell = PyMem_Calloc(1, sizeof(SinkCell) + sizeof(long long) * (self->top + 1));
    if (cell == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *number = PyLong_FromSsize_t(self->count);
    if (number == NULL || PyDict_SetItem(self->names, name, number) < 0) {
        Py_XDECREF(number);
        PyMem_Free(cell);
        return NULL;
    }
    Py_DECREF(number);
    Py_INCREF(name);
    cell->name = name;
    cell->number = self->count;
    self->cells[self->count++] = cell;
    return cell;
}

static PyObject *
sink_spill(CallSink *self, PyObject *call)
{
    PyObject *answer = PyObject_CallOneArg(self->spill, call);
    if (answer == NULL) {
        return NULL;
    }
    Py_DECREF(answer);
    Py_RETURN_NONE;
}

static PyObject *
sink_vectorcall(CallSink *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "CallSink takes one tuple (name, elapsed_ns, failed, ended_ns)");
        return NULL;
    }
    PyObject *call = args[0];
    if (!PyTuple_CheckExact(call) || PyTuple_GET_SIZE(call) != 4) {
        return sink_spill(self, call);
    }
    PyObject *name = PyTuple_GET_ITEM(call, 0);
    PyObject *took = PyTuple_GET_ITEM(call, 1);
    PyObject *ended_at = PyTuple_GET_ITEM(call, 3);
    if (!PyUnicode_CheckExact(name) || !PyLong_Check(took) || !PyLong_Check(ended_at)) {
        return sink_spill(self, call);
    }
    int overflow = 0;
    long long elapsed = PyLong_AsLongLongAndOverflow(took, &overflow);
    if (overflow) {
        return sink_spill(self, call);
    }
    long long ended = PyLong_AsLongLongAndOverflow(ended_at, &overflow);
    if (overflow || ended < 0) {
        return sink_spill(self, call);
    }
    int failed = PyObject_IsTrue(PyTuple_GET_ITEM(call, 2));
    if (failed < 0) {
        return NULL;
    }
    SinkCell *cell;
    if (name == self->last) {
        cell = self->last_cell;
    }
    else {
        cell = sink_cell(self, name);
        if (cell == NULL) {
            return PyErr_Occurred() ? NULL : sink_spill(self, call);
        }
        Py_INCREF(name);
        Py_XSETREF(self->last, name);
        self->last_cell = cell;
    }
    long long index = ended / self->width;
    if (!cell->dirty) {
        cell->index = index;
        cell->dirty = 1;
        self->dirty_list[self->dirty++] = cell->number;
    }
    else if (index > cell->index) {
        if (sink_finish(self, cell) < 0) {
            return NULL;
        }
        cell->index = index;
        cell->dirty = 1; /* still on the dirty list */
    }
    /* bisect_left: the first bound >= elapsed, or top past them all */
    Py_ssize_t low = 0, high = self->top;
    const long long *bounds = self->bounds;
    while (low < high) {
        Py_ssize_t mid = (low + high) >> 1;
        if (bounds[mid] < elapsed) {
            low = mid + 1;
        }
        else {
            high = mid;
        }
    }
    cell->hist[low] += 1;
    cell->calls += 1;
    cell->failures += failed;
    Py_RETURN_NONE;
}

static PyObject *
sink_take(CallSink *self, PyObject *Py_UNUSED(ignored))
{
    /* Every finished record and every cell counted since the last take, oldest first. */
    for (Py_ssize_t i = 0; i < self->dirty; i++) {
        if (sink_finish(self, self->cells[self->dirty_list[i]]) < 0) {
            /* The cells not yet taken stay on the list, from i on. */
            memmove(self->dirty_list, self->dirty_list + i, sizeof(Py_ssize_t) * (self->dirty - i));
            self->dirty -= i;
            return NULL;
        }
    }
    self->dirty = 0;
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) {
        return NULL;
    }
    PyObject *taken = self->records;
    self->records = fresh;
    return taken;
}

static PyObject *
sink_waiting(CallSink *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->dirty + PyList_GET_SIZE(self->records));
}

static PyObject *
sink_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"bounds", "width", "spill", "most", NULL};
    PyObject *bounds, *spill;
    long long width;
    Py_ssize_t most;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OLOn", keywords, &bounds, &width, &spill, &most)) {
        return NULL;
    }
    if (width < 1 || most < 1) {
        PyErr_SetString(PyExc_ValueError, "CallSink: width and most must be >= 1");
        return NULL;
    }
    PyObject *sequence = PySequence_Fast(bounds, "CallSink: bounds must be a sequence of ints");
    if (sequence == NULL) {
        return NULL;
    }
    CallSink *self = (CallSink *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(sequence);
        return NULL;
    }
    self->vectorcall = (vectorcallfunc)sink_vectorcall;
    self->top = PySequence_Fast_GET_SIZE(sequence);
    self->bounds = PyMem_Calloc(self->top + 1, sizeof(long long));
    self->cells = PyMem_Calloc(most, sizeof(SinkCell *));
    self->dirty_list = PyMem_Calloc(most, sizeof(Py_ssize_t));
    self->names = PyDict_New();
    self->records = PyList_New(0);
    if (self->bounds == NULL || self->cells == NULL || self->dirty_list == NULL) {
        PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; !PyErr_Occurred() && i < self->top; i++) {
        self->bounds[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(sequence, i));
    }
    Py_DECREF(sequence);
    if (PyErr_Occurred()) {
        Py_DECREF(self);
        return NULL;
    }
    Py_INCREF(spill);
    self->spill = spill;
    self->width = width;
    self->most = most;
    return (PyObject *)self;
}

static int
sink_traverse(CallSink *self, visitproc visit, void *arg)
{
    Py_VISIT(self->names);
    Py_VISIT(self->records);
    Py_VISIT(self->spill);
    return 0;
}

static int
sink_clear(CallSink *self)
{
    Py_CLEAR(self->names);
    Py_CLEAR(self->records);
    Py_CLEAR(self->spill);
    return 0;
}

static void
sink_dealloc(CallSink *self)
{
    PyObject_GC_UnTrack(self);
    sink_clear(self);
    Py_CLEAR(self->last);
    if (self->cells != NULL) {
        for (Py_ssize_t i = 0; i < self->count; i++) {
            Py_XDECREF(self->cells[i]->name);
            PyMem_Free(self->cells[i]);
        }
        PyMem_Free(self->cells);
    }
    PyMem_Free(self->dirty_list);
    PyMem_Free(self->bounds);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef sink_methods[] = {
    {"take", (PyCFunction)sink_take, METH_NOARGS,
     "Return the records counted since the last take (name, index, calls, failures, bins)."},
    {NULL},
};

static PyGetSetDef sink_getset[] = {
    {"waiting", (getter)sink_waiting, NULL, "Records take() would return now.", NULL},
    {NULL},
};

static PyTypeObject CallSinkType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "resilience._speedups.CallSink",
    .tp_doc = "RollingMetrics' call tap: counts each traced call into its name's slice at once.",
    .tp_basicsize = sizeof(CallSink),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(CallSink, vectorcall),
    .tp_new = sink_new,
    .tp_dealloc = (destructor)sink_dealloc,
    .tp_traverse = (traverseproc)sink_traverse,
    .tp_clear = (inquiry)sink_clear,
    .tp_call = PyVectorcall_Call,
    .tp_methods = sink_methods,
    .tp_getset = sink_getset,
};

static int
sink_init(PyObject *module)
{
    if (PyType_Ready(&CallSinkType) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "CallSink", (PyObject *)&CallSinkType);
}

static PyMethodDef module_methods[] = {
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL,
     "Give the C type the deadline variable, the clock holder and the slow-path check."},
    {"af_configure", (PyCFunction)(void (*)(void))af_configure, METH_FASTCALL,
     "Give af_lease_begin the pool module's lease ids and the clock holder."},
    {"af_lease_begin", (PyCFunction)af_lease_begin, METH_O,
     "Record one unit's lease starting now in a watched pool's leases; return its id."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "resilience._speedups",
    .m_doc = "The optional C accelerator: the hot parts of deadlines, memory rate limits, @throttled, "
             "a watched @bounded pool's lease starts "
             "and the rolling metrics' call tap.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&BoundType) < 0 || PyType_Ready(&MethodType) < 0 ||
        PyType_Ready(&CoreType) < 0 || PyType_Ready(&RateStartType) < 0) {
        return NULL;
    }
    const char *names[5] = {"log", "starts", "end", "clock", "append"};
    for (int i = 0; i < 5; i++) {
        if ((rate_names[i] = PyUnicode_InternFromString(names[i])) == NULL) {
            return NULL;
        }
    }
    PyObject *collections = PyImport_ImportModule("collections");
    if (collections == NULL) {
        return NULL;
    }
    if ((rate_zero = PyFloat_FromDouble(0.0)) == NULL) {
        Py_DECREF(collections);
        return NULL;
    }
    deque_type = PyObject_GetAttrString(collections, "deque");
    Py_DECREF(collections);
    if (deque_type == NULL || (deque_append = PyObject_GetAttrString(deque_type, "append")) == NULL) {
        return NULL;
    }
    if (PyDict_SetItemString(CoreType.tp_dict, "__enter__", (PyObject *)&enter_method) < 0 ||
        PyDict_SetItemString(CoreType.tp_dict, "__exit__", (PyObject *)&exit_method) < 0) {
        return NULL;
    }
    PyType_Modified(&CoreType);
    PyObject *time = PyImport_ImportModule("time");
    if (time == NULL) {
        return NULL;
    }
    state.monotonic = PyObject_GetAttrString(time, "monotonic");
    Py_DECREF(time);
    if (state.monotonic == NULL) {
        return NULL;
    }
    state.monotonic_name = PyUnicode_InternFromString("monotonic");
    if (state.monotonic_name == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "DeadlineCore", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObjectRef(module, "RateStart", (PyObject *)&RateStartType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (throttle_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (rate_weighted_init(module) < 0 || sink_init(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
