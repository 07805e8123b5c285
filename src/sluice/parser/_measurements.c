/* The built-in measurement parser's compiled fast path: a message body (a msgpack array of
 * measurement records) straight to the parts of its JSON documents, without building a
 * Python object per field.
 *
 * It accepts only what it can decide alone, and declines (returns None) everything else,
 * which then goes the msgspec way in sluice.parser.builtin exactly as before:
 *   - strings of printable ASCII without '"' or '\\' (their JSON is their bytes, quoted,
 *     and their length in characters is their length in bytes);
 *   - the fields and bounds of sluice.records.MeasurementRecord, each at most once, and
 *     nothing else; ints for "ts", a float or an int of at most 2**53 for "value";
 *   - nothing after the array.
 * Floats are not formatted here: they are returned as Python floats for msgspec to encode
 * in one call (CPython's own shortest repr costs 14 times msgspec's).
 *
 * transcode(payload) -> None | (ids, stamps, heads, values, rests), five lists with one
 * item per record: document k is '{"id":' + heads[k] + <values[k] as JSON> + rests[k] and
 * its closing brace, in the field order msgspec encodes the struct in.
 *
 * Every read is bounds-checked against the payload; nothing is allocated from a length
 * the payload states before that length is checked against the bytes left.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* sluice.records and sluice.timestamps; tests/parser/test_measurements_c.py checks them */
#define MAX_ID 128
#define MAX_NAME 256
#define MAX_UNIT 64
#define MAX_TAGS 32
#define MAX_TAG_KEY 64
#define MAX_TAG_VALUE 256
#define MAX_TS 253402300799999LL
#define MAX_EXACT_INT (1LL << 53)

typedef struct {
    const unsigned char *p, *end;
} Reader;

typedef struct {
    char *data;
    Py_ssize_t size, cap;
} Buffer;

static Buffer out_buf = {NULL, 0, 0};

static int
grow(Buffer *b, Py_ssize_t extra)
{
    if (b->size + extra <= b->cap)
        return 1;
    Py_ssize_t cap = b->cap ? b->cap : 4096;
    while (cap < b->size + extra)
        cap *= 2;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL)
        return 0;
    b->data = data;
    b->cap = cap;
    return 1;
}

static int
put(Buffer *b, const char *s, Py_ssize_t n)
{
    if (!grow(b, n))
        return 0;
    memcpy(b->data + b->size, s, n);
    b->size += n;
    return 1;
}

#define PUT_LITERAL(b, lit) put((b), (lit), (Py_ssize_t)sizeof(lit) - 1)

static int
put_string(Buffer *b, const char *s, Py_ssize_t n)
{
    return PUT_LITERAL(b, "\"") && put(b, s, n) && PUT_LITERAL(b, "\"");
}

static int
put_int(Buffer *b, int64_t v)
{
    char digits[24];
    int n = 0;
    uint64_t u = (uint64_t)v; /* only called with v >= 0 */
    do {
        digits[sizeof(digits) - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    return put(b, digits + sizeof(digits) - n, n);
}

static uint64_t
big_endian(const unsigned char *p, int width)
{
    uint64_t v = 0;
    for (int i = 0; i < width; i++)
        v = (v << 8) | p[i];
    return v;
}

static Py_ssize_t
left(const Reader *r)
{
    return r->end - r->p;
}

/* A length-prefixed header: a fix form in [fix_lo, fix_hi], or one of three tagged widths
 * (a tag of 0 is not used). */
static int
read_header(Reader *r, unsigned char fix_lo, unsigned char fix_hi, unsigned char fix_mask,
            unsigned char tag8, unsigned char tag16, unsigned char tag32, Py_ssize_t *n)
{
    if (left(r) < 1)
        return 0;
    unsigned char b = *r->p;
    if (b >= fix_lo && b <= fix_hi) {
        *n = b & fix_mask;
        r->p++;
        return 1;
    }
    int width = (tag8 && b == tag8) ? 1 : b == tag16 ? 2 : b == tag32 ? 4 : 0;
    if (!width || left(r) < 1 + width)
        return 0;
    *n = (Py_ssize_t)big_endian(r->p + 1, width);
    r->p += 1 + width;
    return 1;
}

static int
read_string(Reader *r, const char **s, Py_ssize_t *n)
{
    if (!read_header(r, 0xa0, 0xbf, 0x1f, 0xd9, 0xda, 0xdb, n) || left(r) < *n)
        return 0;
    *s = (const char *)r->p;
    r->p += *n;
    return 1;
}

static int
read_map(Reader *r, Py_ssize_t *n)
{
    /* each entry takes at least two bytes */
    return read_header(r, 0x80, 0x8f, 0x0f, 0, 0xde, 0xdf, n) && *n <= left(r) / 2;
}

static int
read_int(Reader *r, int64_t *v)
{
    if (left(r) < 1)
        return 0;
    unsigned char b = *r->p;
    if (b <= 0x7f || b >= 0xe0) {
        *v = (int8_t)b;
        if (b <= 0x7f)
            *v = b;
        r->p++;
        return 1;
    }
    int width, is_signed;
    switch (b) {
    case 0xcc: width = 1; is_signed = 0; break;
    case 0xcd: width = 2; is_signed = 0; break;
    case 0xce: width = 4; is_signed = 0; break;
    case 0xcf: width = 8; is_signed = 0; break;
    case 0xd0: width = 1; is_signed = 1; break;
    case 0xd1: width = 2; is_signed = 1; break;
    case 0xd2: width = 4; is_signed = 1; break;
    case 0xd3: width = 8; is_signed = 1; break;
    default: return 0;
    }
    if (left(r) < 1 + width)
        return 0;
    uint64_t u = big_endian(r->p + 1, width);
    r->p += 1 + width;
    if (!is_signed) {
        if (u > (uint64_t)INT64_MAX)
            return 0;
        *v = (int64_t)u;
    } else if (width == 8) {
        *v = (int64_t)u;
    } else {
        int shift = 64 - 8 * width;
        *v = (int64_t)(u << shift) >> shift;
    }
    return 1;
}

static int
read_number(Reader *r, double *v)
{
    if (left(r) >= 9 && *r->p == 0xcb) {
        uint64_t u = big_endian(r->p + 1, 8);
        memcpy(v, &u, 8);
        r->p += 9;
    } else if (left(r) >= 5 && *r->p == 0xca) {
        uint32_t u = (uint32_t)big_endian(r->p + 1, 4);
        float f;
        memcpy(&f, &u, 4);
        *v = f;
        r->p += 5;
    } else {
        int64_t i;
        if (!read_int(r, &i) || i > MAX_EXACT_INT || i < -MAX_EXACT_INT)
            return 0;
        *v = (double)i;
    }
    return isfinite(*v);
}

/* printable ASCII without '"' or '\\', of min..max bytes */
static int
plain(const char *s, Py_ssize_t n, Py_ssize_t min, Py_ssize_t max)
{
    if (n < min || n > max)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c > 0x7e || c == '"' || c == '\\')
            return 0;
    }
    return 1;
}

static int
key_is(const char *key, Py_ssize_t n, const char *name)
{
    return (size_t)n == strlen(name) && memcmp(key, name, n) == 0;
}

enum { F_ID = 1, F_SENSOR = 2, F_METRIC = 4, F_VALUE = 8, F_TS = 16, F_UNIT = 32, F_TAGS = 64 };
#define F_REQUIRED (F_ID | F_SENSOR | F_METRIC | F_VALUE | F_TS)

typedef struct {
    const char *id, *sensor, *metric, *unit;
    Py_ssize_t n_id, n_sensor, n_metric, n_unit;
    double value;
    int64_t ts;
    Py_ssize_t n_tags;
    const char *tag_key[MAX_TAGS], *tag_value[MAX_TAGS];
    Py_ssize_t n_tag_key[MAX_TAGS], n_tag_value[MAX_TAGS];
} Record;

/* 1: a record this path can encode; 0: declined */
static int
read_record(Reader *r, Record *rec)
{
    Py_ssize_t fields;
    unsigned seen = 0;
    if (!read_map(r, &fields))
        return 0;
    for (Py_ssize_t f = 0; f < fields; f++) {
        const char *key;
        Py_ssize_t n_key;
        unsigned field;
        if (!read_string(r, &key, &n_key))
            return 0;
        if (key_is(key, n_key, "id")) {
            field = F_ID;
            if (!read_string(r, &rec->id, &rec->n_id) || !plain(rec->id, rec->n_id, 1, MAX_ID))
                return 0;
        } else if (key_is(key, n_key, "sensor")) {
            field = F_SENSOR;
            if (!read_string(r, &rec->sensor, &rec->n_sensor)
                    || !plain(rec->sensor, rec->n_sensor, 1, MAX_NAME))
                return 0;
        } else if (key_is(key, n_key, "metric")) {
            field = F_METRIC;
            if (!read_string(r, &rec->metric, &rec->n_metric)
                    || !plain(rec->metric, rec->n_metric, 1, MAX_NAME))
                return 0;
        } else if (key_is(key, n_key, "value")) {
            field = F_VALUE;
            if (!read_number(r, &rec->value))
                return 0;
        } else if (key_is(key, n_key, "ts")) {
            field = F_TS;
            if (!read_int(r, &rec->ts) || rec->ts < 0 || rec->ts > MAX_TS)
                return 0;
        } else if (key_is(key, n_key, "unit")) {
            field = F_UNIT;
            if (!read_string(r, &rec->unit, &rec->n_unit)
                    || !plain(rec->unit, rec->n_unit, 1, MAX_UNIT))
                return 0;
        } else if (key_is(key, n_key, "tags")) {
            field = F_TAGS;
            if (!read_map(r, &rec->n_tags) || rec->n_tags > MAX_TAGS)
                return 0;
            for (Py_ssize_t t = 0; t < rec->n_tags; t++) {
                if (!read_string(r, &rec->tag_key[t], &rec->n_tag_key[t])
                        || !read_string(r, &rec->tag_value[t], &rec->n_tag_value[t])
                        || !plain(rec->tag_key[t], rec->n_tag_key[t], 1, MAX_TAG_KEY)
                        || !plain(rec->tag_value[t], rec->n_tag_value[t], 0, MAX_TAG_VALUE)
                        || memchr(rec->tag_key[t], '.', rec->n_tag_key[t]) != NULL)
                    return 0;
                for (Py_ssize_t u = 0; u < t; u++) /* a repeated key: msgspec decides */
                    if (rec->n_tag_key[u] == rec->n_tag_key[t]
                            && memcmp(rec->tag_key[u], rec->tag_key[t], rec->n_tag_key[t]) == 0)
                        return 0;
            }
        } else {
            return 0;
        }
        if (seen & field)
            return 0;
        seen |= field;
    }
    if ((seen & F_REQUIRED) != F_REQUIRED)
        return 0;
    if (!(seen & F_UNIT))
        rec->unit = NULL;
    if (!(seen & F_TAGS))
        rec->n_tags = -1;
    return 1;
}

static PyObject *
bytes_of(Buffer *b)
{
    return PyBytes_FromStringAndSize(b->data, b->size);
}

/* head: '"<id>","sensor":"..","metric":"..","value":'; rest: ',"ts":..' and the optional
 * fields, without the document's closing brace */
static int
write_record(const Record *rec, PyObject **head, PyObject **rest)
{
    Buffer *b = &out_buf;
    b->size = 0;
    if (!(put_string(b, rec->id, rec->n_id) && PUT_LITERAL(b, ",\"sensor\":")
            && put_string(b, rec->sensor, rec->n_sensor) && PUT_LITERAL(b, ",\"metric\":")
            && put_string(b, rec->metric, rec->n_metric) && PUT_LITERAL(b, ",\"value\":"))) {
        PyErr_NoMemory();
        return 0;
    }
    if ((*head = bytes_of(b)) == NULL)
        return 0;
    b->size = 0;
    int ok = PUT_LITERAL(b, ",\"ts\":") && put_int(b, rec->ts);
    if (rec->unit != NULL)
        ok = ok && PUT_LITERAL(b, ",\"unit\":") && put_string(b, rec->unit, rec->n_unit);
    if (rec->n_tags >= 0) {
        ok = ok && PUT_LITERAL(b, ",\"tags\":{");
        for (Py_ssize_t t = 0; ok && t < rec->n_tags; t++)
            ok = (t == 0 || PUT_LITERAL(b, ",")) && put_string(b, rec->tag_key[t], rec->n_tag_key[t])
                 && PUT_LITERAL(b, ":") && put_string(b, rec->tag_value[t], rec->n_tag_value[t]);
        ok = ok && PUT_LITERAL(b, "}");
    }
    if (!ok)
        PyErr_NoMemory();
    if (!ok || (*rest = bytes_of(b)) == NULL) {
        Py_CLEAR(*head);
        return 0;
    }
    return 1;
}

static PyObject *
transcode(PyObject *module, PyObject *payload)
{
    Py_buffer view;
    if (PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    Reader r = {(const unsigned char *)view.buf, (const unsigned char *)view.buf + view.len};
    PyObject *lists[5] = {NULL, NULL, NULL, NULL, NULL};
    PyObject *result = NULL;
    Py_ssize_t count;
    /* each record takes at least one byte, so count is bounded by the payload's size */
    if (!read_header(&r, 0x90, 0x9f, 0x0f, 0, 0xdc, 0xdd, &count) || count > left(&r))
        goto decline;
    for (int i = 0; i < 5; i++)
        if ((lists[i] = PyList_New(count)) == NULL)
            goto done;
    for (Py_ssize_t k = 0; k < count; k++) {
        Record rec;
        PyObject *head, *rest, *item;
        if (!read_record(&r, &rec))
            goto decline;
        if ((item = PyUnicode_DecodeASCII(rec.id, rec.n_id, NULL)) == NULL)
            goto done;
        PyList_SET_ITEM(lists[0], k, item);
        if ((item = PyLong_FromLongLong(rec.ts)) == NULL)
            goto done;
        PyList_SET_ITEM(lists[1], k, item);
        if (!write_record(&rec, &head, &rest))
            goto done;
        PyList_SET_ITEM(lists[2], k, head);
        PyList_SET_ITEM(lists[4], k, rest);
        if ((item = PyFloat_FromDouble(rec.value)) == NULL)
            goto done;
        PyList_SET_ITEM(lists[3], k, item);
    }
    if (left(&r) != 0)
        goto decline;
    result = PyTuple_Pack(5, lists[0], lists[1], lists[2], lists[3], lists[4]);
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
done:
    for (int i = 0; i < 5; i++)
        Py_XDECREF(lists[i]);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
limits(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i,s:i,s:L,s:L}", "id", MAX_ID, "name", MAX_NAME,
                         "unit", MAX_UNIT, "tags", MAX_TAGS, "tag_key", MAX_TAG_KEY,
                         "tag_value", MAX_TAG_VALUE, "ts", MAX_TS, "exact_int", MAX_EXACT_INT);
}

static PyMethodDef methods[] = {
    {"transcode", transcode, METH_O, "A message body to its documents' parts, or None."},
    {"limits", limits, METH_NOARGS, "The bounds compiled in, for the tests."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "sluice.parser._measurements", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit__measurements(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;
    PyObject *names = Py_BuildValue("[ss]", "limits", "transcode");
    if (names == NULL || PyModule_AddObject(module, "__all__", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
