/* Shared definitions for every scratchnet OpenCL kernel.
 *
 * The host compiles all kernel files as one program per (context, dtype) with
 *   -D REAL=float|double   element type of every array
 *   -D VW=1|2|4|8|16       SIMD width: each work-item handles VW consecutive
 *                          elements with OpenCL vector types (16 on an
 *                          AVX-512 PoCL device, 1 on a GPU, where the
 *                          hardware vectorises across work-items instead)
 *   -D TM=..               rows a matrix-product work-item accumulates at once
 *   -D TI=.., TK=..        tile of the weight-gradient reduction
 *
 * Layout (as in the series): samples are columns, matrices are row-major, so
 * a row of an activation matrix holds one feature for every sample and runs
 * along the fast, vectorised index.  Every array argument is a buffer plus an
 * element offset, because scratchnet's parameters are views into one flat
 * buffer.
 *
 * Activation codes (host: opencl_ext/backend.py, _ACT):
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

/* a = f(z) for a scalar (T = REAL) or a SIMD vector (T = REALV).  relu is
 * written as a select so that NaN propagates, as torch.clamp_min does. */
#define ACTIVATE(T, act, z)                                                \
    ((act) == ACT_SIGMOID ? (T)(1) / ((T)(1) + exp(-(z)))                  \
     : (act) == ACT_TANH  ? tanh(z)                                        \
     : (act) == ACT_RELU  ? ((z) < (T)(0) ? (T)(0) : (z))                  \
     : (z))

/* g ⊙ f'(z), with f' written through a = f(z) as the series' `prime` does:
 * sigmoid a (1 - a), tanh 1 - a^2, relu [a > 0], linear 1. */
#define DERIVATIVE(T, act, a, g)                                           \
    ((act) == ACT_SIGMOID ? (g) * ((a) * ((T)(1) - (a)))                   \
     : (act) == ACT_TANH  ? (g) * ((T)(1) - (a) * (a))                     \
     : (act) == ACT_RELU  ? ((a) > (T)(0) ? (g) : (T)(0))                  \
     : (g))
