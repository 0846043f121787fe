/*
 * The optional C accelerator of resilience._deadline: the deadline's hot part.
 *
 * DeadlineCore is the base of ``deadline`` when this module is built: it is made, entered
 * and left exactly as ``_deadline._PurePython`` is (the same slots, the same rules), without
 * a Python frame for each step. The clock is the process default in force (read from the
 * holder ``_clock.DEFAULT`` at each entry, so ``virtual_time()`` swaps it), with a direct
 * CLOCK_MONOTONIC read when that default is ``time.monotonic`` itself. An inner deadline
 * never extends an outer one. Everything else (async, decorating, messages) stays Python.
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
        struct timespec ts;
        Py_DECREF(monotonic);
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            /* as time.monotonic() computes it: integer nanoseconds, then one division */
            long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            return (double)ns / 1e9;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1.0;
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
        struct timespec ts;
        Py_DECREF(monotonic);
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            return (double)ns / 1e9;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1.0;
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
    .m_doc = "The optional C accelerator of resilience._deadline: the deadline's hot part.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&BoundType) < 0 || PyType_Ready(&MethodType) < 0 ||
        PyType_Ready(&CoreType) < 0) {
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
    if (PyModule_AddObjectRef(module, "DeadlineCore", (PyObject *)&CoreType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
