/* Partial JPEG decoding with libjpeg(-turbo): one rectangle of the image at 1/k scale.
 *
 * decode_region(data, k, x0, y0, x1, y1, whole=False) -> bytearray | None
 *
 * The rows y0 <= y < y1 and columns x0 <= x < x1 of the image decoded at scale 1/k
 * (k in 1, 2, 4, 8: libjpeg's DCT scaling), RGB, row by row ((y1 - y0) * (x1 - x0) * 3
 * bytes). libjpeg-turbo's partial decompression does the work: jpeg_crop_scanline limits
 * the inverse DCT, upsampling and colour conversion to the iMCU columns that hold
 * [x0, x1) (not for the rare samplings where it is inexact, crop_is_exact);
 * jpeg_skip_scanlines skips them for the rows above y0 (their entropy-coded data is still
 * read: Huffman decoding is sequential); the decode stops after row y1 - 1, so the rows
 * below it are never read, unless y1 is the last row or `whole`: then it reads on to the
 * end marker (jpeg_finish_decompress), as a full decode does. The pixels are those of the
 * full decode at that scale (libjpeg-turbo's documented guarantee, tested against PIL's
 * decoder).
 *
 * None when libjpeg warns (corrupt or truncated data, which it would patch over) or a
 * progressive file's coefficients are incomplete (progression_incomplete): the caller then
 * decodes the usual way and decides. ValueError for arguments out of range
 * (checked against the header before the output is allocated), OSError when libjpeg
 * refuses the data. The GIL is released while libjpeg works.
 *
 * Part of classbalanced (Apache-2.0). Optional: built when libjpeg's headers are found
 * (setup.py); classbalanced.data.pipeline falls back to PIL's decoder without it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#ifndef LIBJPEG_TURBO_VERSION
#error "libjpeg-turbo >= 1.5 is needed (jpeg_crop_scanline, jpeg_skip_scanlines)"
#endif
#if JPEG_LIB_VERSION >= 70
/* the jpeg7/8 emulations name the scaled DCT sizes per direction (DCT_h_scaled_size, ...)
 * and scale them so; PIL's pixels at 1/k were never checked against such a build */
#error "libjpeg-turbo built with its default libjpeg v6b API (JPEG_LIB_VERSION 62) is needed"
#endif

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    int warned;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void on_error(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void on_message(j_common_ptr cinfo, int level) {
    if (level < 0) {  /* a warning: corrupt data that libjpeg would patch over */
        ErrorManager *err = (ErrorManager *)cinfo->err;
        if (!err->warned) {
            (*cinfo->err->format_message)(cinfo, err->message);
        }
        err->warned = 1;
    }
}

typedef struct {
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    int k, x0, y0, x1, y1, whole;
    unsigned char *out;  /* (y1 - y0) * (x1 - x0) * 3 bytes */
} Region;

enum { OK = 0, FAILED = 1, WARNED = 2 };

/* Reads the header of `data` and sets the output (RGB at 1/k): cinfo.output_width / _height.
 * Runs without the GIL. FAILED (the decompressor destroyed) when libjpeg refuses the data. */
static int open_jpeg(Region *r, const unsigned char *data, size_t size) {
    ErrorManager *err = &r->err;
    r->cinfo.err = jpeg_std_error(&err->pub);
    err->pub.error_exit = on_error;
    err->pub.emit_message = on_message;
    err->warned = 0;
    err->message[0] = '\0';
    if (setjmp(err->jump)) {
        jpeg_destroy_decompress(&r->cinfo);  /* jpeg_create_decompress sets mem = NULL first */
        return FAILED;
    }
    jpeg_create_decompress(&r->cinfo);
    jpeg_mem_src(&r->cinfo, (unsigned char *)data, (unsigned long)size);
    jpeg_read_header(&r->cinfo, TRUE);
    r->cinfo.out_color_space = JCS_RGB;
    r->cinfo.scale_num = 1;
    r->cinfo.scale_denom = (unsigned int)r->k;
    jpeg_calc_output_dimensions(&r->cinfo);
    return OK;
}

/* Whether jpeg_crop_scanline gives the pixels of the full decode. libjpeg-turbo (2.1, 3.0)
 * resets each component's downsampled width to output_width * h / max_h, which holds only
 * where the component is inverse-transformed at the smallest scaled size: at 1/2 and 1/4,
 * 4:1:0 (4x2) and 2x4 luma decode their chroma at twice that size, and the fancy
 * upsampling that then remains (h2v1 / h1v2) would read the wrong width. Components that
 * need no upsampling, or one that reads no width (box upsampling), are safe. */
static int crop_is_exact(j_decompress_ptr cinfo) {
    for (int ci = 0; ci < cinfo->num_components; ci++) {
        jpeg_component_info *c = &cinfo->comp_info[ci];
        int fullsize = c->h_samp_factor * c->DCT_scaled_size ==
                           cinfo->max_h_samp_factor * cinfo->min_DCT_scaled_size &&
                       c->v_samp_factor * c->DCT_scaled_size ==
                           cinfo->max_v_samp_factor * cinfo->min_DCT_scaled_size;
        if (c->DCT_scaled_size != cinfo->min_DCT_scaled_size && !fullsize) {
            return 0;
        }
    }
    return 1;
}

/* Whether a progressive file left coefficients unrefined or unsent (cut short at a scan
 * boundary, or a scan script that stops early): libjpeg then estimates them (block
 * smoothing), and its versions estimate differently (Debian's 2.1 against Pillow's 3.x: a
 * level here and there), so such a file is left to the caller's decode, as a warning is. */
static int progression_incomplete(j_decompress_ptr cinfo) {
    if (!cinfo->progressive_mode || cinfo->coef_bits == NULL) {
        return 0;
    }
    for (int ci = 0; ci < cinfo->num_components; ci++) {
        for (int k = 0; k < DCTSIZE2; k++) {
            if (cinfo->coef_bits[ci][k] != 0) {
                return 1;
            }
        }
    }
    return 0;
}

/* Decodes the region into r->out after open_jpeg. Runs without the GIL; destroys the
 * decompressor and frees `row` exactly once on every path. */
static int decode(Region *r) {
    j_decompress_ptr cinfo = &r->cinfo;
    unsigned char *volatile row = NULL;
    int status = OK;

    if (setjmp(r->err.jump)) {
        jpeg_destroy_decompress(cinfo);
        free(row);
        return FAILED;
    }
    jpeg_start_decompress(cinfo);  /* a progressive file: all of it read here */
    if (progression_incomplete(cinfo)) {
        r->err.warned = 1;  /* libjpeg would patch it over; not worth a partial decode */
    }
    /* one iMCU column of margin on each side: at the edges of a cropped decode the chroma
     * upsampling sees an image edge, which the full decode does not have there */
    int margin = cinfo->max_h_samp_factor * cinfo->min_DCT_scaled_size;
    int from = r->x0 > margin ? r->x0 - margin : 0;
    int to = r->x1 + margin < (int)cinfo->output_width ? r->x1 + margin : (int)cinfo->output_width;
    JDIMENSION left = (JDIMENSION)from, width = (JDIMENSION)(to - from);
    if (width < cinfo->output_width && crop_is_exact(cinfo)) {
        jpeg_crop_scanline(cinfo, &left, &width);  /* left moves to an iMCU boundary */
    } else {
        left = 0;
    }
    if (r->y0 > 0) {
        jpeg_skip_scanlines(cinfo, (JDIMENSION)r->y0);
    }
    row = malloc((size_t)cinfo->output_width * 3);
    if (row == NULL) {
        strcpy(r->err.message, "out of memory");
        jpeg_destroy_decompress(cinfo);
        return FAILED;
    }
    size_t skip = (size_t)(r->x0 - (int)left) * 3, bytes = (size_t)(r->x1 - r->x0) * 3;
    unsigned char *dest = r->out;
    JSAMPROW rows[1] = {row};
    while ((int)cinfo->output_scanline < r->y1) {
        if (jpeg_read_scanlines(cinfo, rows, 1) != 1) {
            break;  /* cannot happen with a memory source; guarded all the same */
        }
        memcpy(dest, row + skip, bytes);
        dest += bytes;
    }
    if (dest != r->out + bytes * (size_t)(r->y1 - r->y0)) {
        strcpy(r->err.message, "too few rows decoded");
        status = FAILED;
    } else if (r->whole || r->y1 == (int)cinfo->output_height) {
        /* read on to the end marker, as a full decode does: its errors count */
        while (cinfo->output_scanline < cinfo->output_height) {
            if (jpeg_read_scanlines(cinfo, rows, 1) != 1) {
                break;
            }
        }
        jpeg_finish_decompress(cinfo);
    }
    if (status == OK && r->err.warned) {
        status = WARNED;
    }
    jpeg_destroy_decompress(cinfo);  /* the rows below y1 are never read unless `whole` */
    free(row);
    return status;
}

static PyObject *decode_region(PyObject *self, PyObject *args) {
    Py_buffer view;
    Region r;
    int status;
    (void)self;
    r.whole = 0;
    if (!PyArg_ParseTuple(args, "y*iiiii|p:decode_region", &view, &r.k, &r.x0, &r.y0, &r.x1,
                          &r.y1, &r.whole)) {
        return NULL;
    }
    if (!(r.k == 1 || r.k == 2 || r.k == 4 || r.k == 8) || r.x0 < 0 || r.y0 < 0 ||
        r.x1 <= r.x0 || r.y1 <= r.y0) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "decode_region: expected k in 1, 2, 4, 8 and 0 <= x0 < x1, 0 <= y0 < y1, "
                     "got k=%d, x %d..%d, y %d..%d", r.k, r.x0, r.x1, r.y0, r.y1);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    status = open_jpeg(&r, (const unsigned char *)view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    if (status != OK) {
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_OSError, "broken JPEG data: %s", r.err.message);
        return NULL;
    }
    /* checked against the header before anything is allocated: at most 65500 x 65500 */
    if (r.cinfo.output_components != 3 || r.x1 > (int)r.cinfo.output_width ||
        r.y1 > (int)r.cinfo.output_height) {
        jpeg_destroy_decompress(&r.cinfo);
        PyBuffer_Release(&view);
        PyErr_Format(PyExc_ValueError,
                     "decode_region: expected a region inside the RGB image at 1/%d, "
                     "got x %d..%d, y %d..%d", r.k, r.x0, r.x1, r.y0, r.y1);
        return NULL;
    }
    Py_ssize_t size = (Py_ssize_t)(r.y1 - r.y0) * (Py_ssize_t)(r.x1 - r.x0) * 3;
    PyObject *result = PyByteArray_FromStringAndSize(NULL, size);  /* writable: no copy */
    if (result == NULL) {
        jpeg_destroy_decompress(&r.cinfo);
        PyBuffer_Release(&view);
        return NULL;
    }
    r.out = (unsigned char *)PyByteArray_AS_STRING(result);
    Py_BEGIN_ALLOW_THREADS
    status = decode(&r);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (status == OK) {
        return result;
    }
    Py_DECREF(result);
    if (status == WARNED) {
        Py_RETURN_NONE;
    }
    PyErr_Format(PyExc_OSError, "broken JPEG data: %s", r.err.message);
    return NULL;
}

/* The first real marker at or after `from`: FF followed by neither 00 (stuffing), FF (fill)
 * nor a restart marker D0-D7; n when there is none. */
static size_t next_marker(const unsigned char *d, size_t n, size_t from) {
    while (from + 1 < n) {
        const unsigned char *p = memchr(d + from, 0xFF, n - 1 - from);
        if (p == NULL) {
            return n;
        }
        size_t i = (size_t)(p - d);
        unsigned char b = d[i + 1];
        if (b != 0x00 && b != 0xFF && (b < 0xD0 || b > 0xD7)) {
            return i;
        }
        from = i + 1;
    }
    return n;
}

/* classbalanced.data.pipeline._well_formed, the same walk: the segments chain from SOI to EOI. */
static int chains_to_end(const unsigned char *d, size_t n) {
    size_t pos = 2;
    while (pos + 1 < n && d[pos] == 0xFF) {
        unsigned char marker = d[pos + 1];
        if (marker == 0xFF) {  /* fill byte */
            pos += 1;
            continue;
        }
        if (marker == 0xD9) {  /* EOI */
            return 1;
        }
        size_t length = 0;
        for (size_t i = pos + 2; i < pos + 4 && i < n; i++) {
            length = length * 256 + d[i];
        }
        if (marker < 0xC0 || (marker >= 0xD0 && marker <= 0xD8) || length < 2) {
            return 0;
        }
        pos += 2 + length;
        if (marker == 0xDA) {  /* SOS: the entropy-coded data runs to the next marker */
            pos = next_marker(d, n, pos);
            if (pos >= n) {
                return 0;
            }
        }
    }
    return 0;
}

static PyObject *well_formed(PyObject *self, PyObject *args) {
    Py_buffer view;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*:well_formed", &view)) {
        return NULL;
    }
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = chains_to_end((const unsigned char *)view.buf, (size_t)view.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyMethodDef methods[] = {
    {"well_formed", well_formed, METH_VARARGS,
     "well_formed(data) -> bool\n\n"
     "Whether the JPEG's marker segments chain from SOI to EOI (classbalanced.data.pipeline's\n"
     "_well_formed, in C)."},
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, k, x0, y0, x1, y1, whole=False) -> bytearray | None\n\n"
     "Rows y0..y1-1, columns x0..x1-1 of JPEG `data` decoded at scale 1/k (k in 1, 2, 4, 8),\n"
     "RGB, row-major; None when libjpeg warns about the data (corrupt or truncated). The\n"
     "decode stops after row y1-1 unless that is the last row or `whole`: then it reads on\n"
     "to the end marker as a full decode does (its errors and warnings count)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpegcrop",
    "Partial JPEG decoding (libjpeg-turbo's jpeg_crop_scanline / jpeg_skip_scanlines).", -1,
    methods,
};

/* The version of this module's functions: classbalanced.data.pipeline uses a module built
 * from the same version only (a stale in-place build would take other arguments). */
#define API_VERSION 2

PyMODINIT_FUNC PyInit__jpegcrop(void) {
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddIntConstant(m, "API_VERSION", API_VERSION) < 0 ||
                      PyModule_AddIntConstant(m, "LIBJPEG_TURBO_VERSION_NUMBER",
#ifdef LIBJPEG_TURBO_VERSION_NUMBER
                                              LIBJPEG_TURBO_VERSION_NUMBER
#else
                                              0
#endif
                                              ) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
