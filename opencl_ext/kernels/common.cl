/* Shared definitions for every scratchnet OpenCL kernel.
 *
 * The host compiles all kernel files as one program per (context, dtype) with
 *   -D REAL=float|double   element type of every array
 *   -D VW=1|2|4|8|16       SIMD width: each work-item handles VW consecutive
 *                          elements with OpenCL vector types (8 floats, a
 *                          256-bit register, on a PoCL CPU device; 1 on a
 *                          GPU, whose hardware vectorises across work-items)
 *   -D TM=..               rows a matrix-product work-item accumulates at once
 *   -D TI=.., TK=..        tile of the weight-gradient reduction
 *   -D STRIDED=0|1         the weight gradient's sample loop: contiguous
 *                          chunks per work-item (CPU) or strided, coalesced
 *                          across work-items (GPU); see matmul.cl
 *   -D REAL_IS_FLOAT       (float only) use the inline tanh below
 *
 * Layout (as in the series): samples are columns, matrices are row-major, so
 * a row of an activation matrix holds one feature for every sample and runs
 * along the fast, vectorised index.  Every array argument is a buffer plus an
 * element offset, because scratchnet's parameters are views into one flat
 * buffer.
 *
 * Activation codes (host: opencl_ext/backend.py, ACT):
 *   0 linear   f(z) = z                     f' = 1
 *   1 sigmoid  f(z) = 1 / (1 + e^-z)        f' = a (1 - a)
 *   2 tanh     f(z) = tanh z                f' = 1 - a^2
 *   3 relu     f(z) = max(z, 0) (NaN kept)  f' = [a > 0]
 */

#if defined(cl_khr_fp64)
#pragma OPENCL EXTENSION cl_khr_fp64 : enable
#endif

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#define REAL2 CAT(REAL, 2)
#define REAL4 CAT(REAL, 4)
#define REAL8 CAT(REAL, 8)

/* VLOAD(p) / VSTORE(v, p): VW consecutive elements at p (element-aligned
 * only, since views start anywhere), as one SIMD load or store.  Spelled out
 * element by element rather than with vloadN/vstoreN: the compiler merges
 * these into a single unaligned vector move, while PoCL 3.0 leaves builtins
 * (vloadN, vstoreN, min, fabs, ...) as out-of-line calls, one per vector,
 * which made the kernels several times slower.  For the same reason the
 * kernels below use ternaries instead of min/max/fabs/isnan. */
#if VW == 1
#define REALV REAL
#define VLOAD(p) (*(p))
#define VSTORE(v, p) (*(p) = (v))
#elif VW == 2
#define REALV REAL2
#define VLOAD(p) ((REALV)((p)[0], (p)[1]))
#define VSTORE(v, p) do { REALV v_ = (v); (p)[0] = v_.s0; (p)[1] = v_.s1; } while (0)
#elif VW == 4
#define REALV REAL4
#define VLOAD(p) ((REALV)((p)[0], (p)[1], (p)[2], (p)[3]))
#define VSTORE(v, p) do { REALV v_ = (v); (p)[0] = v_.s0; (p)[1] = v_.s1; \
                          (p)[2] = v_.s2; (p)[3] = v_.s3; } while (0)
#elif VW == 8
#define REALV REAL8
#define VLOAD(p) ((REALV)((p)[0], (p)[1], (p)[2], (p)[3], (p)[4], (p)[5], (p)[6], (p)[7]))
#define VSTORE(v, p) do { REALV v_ = (v); (p)[0] = v_.s0; (p)[1] = v_.s1; \
                          (p)[2] = v_.s2; (p)[3] = v_.s3; (p)[4] = v_.s4; (p)[5] = v_.s5; \
                          (p)[6] = v_.s6; (p)[7] = v_.s7; } while (0)
#elif VW == 16
#define REALV CAT(REAL, 16)
#define VLOAD(p) ((REALV)(VLOAD8_(p), VLOAD8_((p) + 8)))
#define VLOAD8_(p) (REAL8)((p)[0], (p)[1], (p)[2], (p)[3], (p)[4], (p)[5], (p)[6], (p)[7])
#define VSTORE(v, p) do { REALV v_ = (v); (p)[0] = v_.s0; (p)[1] = v_.s1; \
                          (p)[2] = v_.s2; (p)[3] = v_.s3; (p)[4] = v_.s4; (p)[5] = v_.s5; \
                          (p)[6] = v_.s6; (p)[7] = v_.s7; (p)[8] = v_.s8; (p)[9] = v_.s9; \
                          (p)[10] = v_.sa; (p)[11] = v_.sb; (p)[12] = v_.sc; \
                          (p)[13] = v_.sd; (p)[14] = v_.se; (p)[15] = v_.sf; } while (0)
#else
#error "VW must be 1, 2, 4, 8 or 16"
#endif

#ifndef STRIDED
#define STRIDED 0
#endif

#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define ACT_LINEAR 0
#define ACT_SIGMOID 1
#define ACT_TANH 2
#define ACT_RELU 3

/* Horizontal sum of a SIMD vector, pairwise (fixed order: deterministic). */
inline REAL hsum(REALV v) {
#if VW == 16
    REAL8 v8 = v.lo + v.hi;
    REAL4 v4 = v8.lo + v8.hi;
    REAL2 v2 = v4.lo + v4.hi;
    return v2.lo + v2.hi;
#elif VW == 8
    REAL4 v4 = v.lo + v.hi;
    REAL2 v2 = v4.lo + v4.hi;
    return v2.lo + v2.hi;
#elif VW == 4
    REAL2 v2 = v.lo + v.hi;
    return v2.lo + v2.hi;
#elif VW == 2
    return v.lo + v.hi;
#else
    return v;
#endif
}

/* a = f(z) and g ⊙ f'(z) (f' written through a = f(z), as the series'
 * `prime` does), for a scalar (REAL) or a SIMD vector (REALV).  Written as
 * if-chains on the activation code, not as one ?: expression, which the
 * compiler may evaluate whole (exp and tanh for every element); the code is
 * uniform across a launch, so the branch is free.  relu keeps NaN, as
 * torch.clamp_min does. */
#define DEFINE_ACTIVATIONS(T, SUFFIX, TANH)                                 \
    T activate##SUFFIX(const int act, const T z) {                        \
        if (act == ACT_SIGMOID) return (T)(1) / ((T)(1) + exp(-z));       \
        if (act == ACT_TANH) return TANH(z);                               \
        if (act == ACT_RELU) return z < (T)(0) ? (T)(0) : z;              \
        return z;                                                          \
    }                                                                      \
    T derivative##SUFFIX(const int act, const T a, const T g) {           \
        if (act == ACT_SIGMOID) return g * (a * ((T)(1) - a));            \
        if (act == ACT_TANH) return g * ((T)(1) - a * a);                  \
        if (act == ACT_RELU) return a > (T)(0) ? g : (T)(0);              \
        return g;                                                          \
    }

/* tanh.  In float, an inline Cephes tanhf (about 2 ulp):
 *   |x| < 0.625:  tanh x = x + x^3 P(x^2)
 *   otherwise:    tanh x = sign(x) (1 - 2 / (e^(2|x|) + 1))
 * computed for both ranges and selected per lane.  PoCL's builtin tanh is an
 * out-of-line call that costs 1.6 times this exp-based form; the forward pass
 * of a tanh layer is one of the epoch's largest kernels.  In double the
 * builtin stays (accuracy first; float is the fast path). */
#if defined(REAL_IS_FLOAT)
#define DEFINE_TANH(T, SUFFIX)                                              \
    T tanh##SUFFIX(const T x) {                                            \
        const T ax = x < (T)(0) ? -x : x;                                  \
        T big = (T)(1) - (T)(2) / (exp((T)(2) * ax) + (T)(1));             \
        big = x < (T)(0) ? -big : big;                                     \
        const T z = x * x;                                                 \
        const T p = ((((T)(-5.70498872745e-3f) * z + (T)(2.06390887954e-2f)) * z \
                      + (T)(-5.37397155531e-2f)) * z + (T)(1.33314422036e-1f)) * z \
                    + (T)(-3.33332819422e-1f);                             \
        const T small = p * z * x + x;                                     \
        return ax < (T)(0.625f) ? small : big;                             \
    }
#else
#define DEFINE_TANH(T, SUFFIX)                                              \
    T tanh##SUFFIX(const T x) { return tanh(x); }
#endif

/* activate / derivative on REAL, activate_v / derivative_v on REALV. */
DEFINE_TANH(REAL, _s)
DEFINE_ACTIVATIONS(REAL, , tanh_s)
#if VW > 1
DEFINE_TANH(REALV, _sv)
DEFINE_ACTIVATIONS(REALV, _v, tanh_sv)
#else
#define activate_v activate
#define derivative_v derivative
#endif
