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

#if VW == 1
#define REALV REAL
#define VLOAD(p) (*(p))
#define VSTORE(v, p) (*(p) = (v))
#else
#define REALV CAT(REAL, VW)
#define VLOAD(p) CAT(vload, VW)(0, (p))
#define VSTORE(v, p) CAT(vstore, VW)((v), 0, (p))
#endif

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
