// The native epoch runner: whole training steps of a fully connected
// network in one call, on the training network's own (CPU torch) arrays.
//
// The maths is the reference runner's, step for step (engine/reference.py,
// nn/layers.py, nn/costs.py, nn/optim.py):
//
//   forward   z_l = W_l a_{l-1} + s b_l,  a_l = f_l(z_l)        (s = bias sign)
//   cost      g_L = a_L - y (quadratic), or delta_L = a_L - y (cross-entropy)
//   backward  delta_l = g_l * f_l'(a_l),  dW_l = sum delta_l a_{l-1}^T,
//             db_l = sum delta_l,  g_{l-1} = W_l^T delta_l
//   update    the optimizer, with the 1/n of the mean
//
// What is different is where the numbers live.  A step's samples are cut
// into blocks of a few hundred columns; one block goes forward through every
// layer and back again while its activations stay in the core's L1/L2 cache,
// and dW, db accumulate over the blocks.  (The parameters do not change
// within a step, so that is the same sum in another order.)  Bias,
// activation and derivative are applied to the product's registers before
// they are stored, the cost is taken in the pass that forms the output
// gradient, and sigma, tanh, exp and log are evaluated on whole vectors.
//
// Layout: every matrix is row-major with samples along the rows (x is
// (in, N)), so a vector register holds one feature of VL consecutive samples.
//
// Floating point: the file is compiled with -ffp-contract=off; every fused
// multiply-add is written out (vfma), so the arithmetic does not depend on
// what the compiler chooses to contract.  The optimizer updates perform the
// torch backend's operations in its order (a + alpha*b as one fma, as
// ATen's add kernel does), so given the same gradient they give the same
// bits.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif
#if defined(__ARM_NEON) || defined(__aarch64__)
#include <arm_neon.h>
#endif

#if defined(__AVX512F__)
#define SN_VBYTES 64
#define SN_REGS 32
#elif defined(__AVX__)
#define SN_VBYTES 32
#define SN_REGS 16
#else
#define SN_VBYTES 16
#define SN_REGS 16
#endif

// The small helpers below must be inlined: a call with vector registers
// live makes the caller spill every one of them (all are caller-saved),
// and a reduction through a pointer puts the accumulators in memory.
#define SN_INLINE inline __attribute__((always_inline))

typedef float vf __attribute__((vector_size(SN_VBYTES)));
typedef double vd __attribute__((vector_size(SN_VBYTES)));
typedef int32_t vi32 __attribute__((vector_size(SN_VBYTES)));
typedef int64_t vi64 __attribute__((vector_size(SN_VBYTES)));

namespace {

template <class T> struct Vec;
template <> struct Vec<float> {
    using V = vf;
    using I = vi32;
    using E = int32_t;
    static constexpr int N = SN_VBYTES / 4;
};
template <> struct Vec<double> {
    using V = vd;
    using I = vi64;
    using E = int64_t;
    static constexpr int N = SN_VBYTES / 8;
};

// ------------------------------------------------------------ vector basics
template <class V, class T> SN_INLINE V load(const T *p) {
    V v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
template <class V, class T> SN_INLINE void store(T *p, V v) { std::memcpy(p, &v, sizeof v); }
template <class V, class T> SN_INLINE V splat(T x) { return V{} + x; }

SN_INLINE vf vfma(vf a, vf b, vf c) {   // a*b + c, rounded once
#if SN_VBYTES == 64
    return (vf)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif SN_VBYTES == 32 && defined(__FMA__)
    return (vf)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#elif SN_VBYTES == 16 && defined(__FMA__)
    return (vf)_mm_fmadd_ps((__m128)a, (__m128)b, (__m128)c);
#elif SN_VBYTES == 16 && defined(__aarch64__)
    return (vf)vfmaq_f32((float32x4_t)c, (float32x4_t)a, (float32x4_t)b);
#else
    return a * b + c;
#endif
}
SN_INLINE vd vfma(vd a, vd b, vd c) {
#if SN_VBYTES == 64
    return (vd)_mm512_fmadd_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif SN_VBYTES == 32 && defined(__FMA__)
    return (vd)_mm256_fmadd_pd((__m256d)a, (__m256d)b, (__m256d)c);
#elif SN_VBYTES == 16 && defined(__FMA__)
    return (vd)_mm_fmadd_pd((__m128d)a, (__m128d)b, (__m128d)c);
#elif SN_VBYTES == 16 && defined(__aarch64__)
    return (vd)vfmaq_f64((float64x2_t)c, (float64x2_t)a, (float64x2_t)b);
#else
    return a * b + c;
#endif
}
SN_INLINE float sfma(float a, float b, float c) {
#if defined(__FMA__) || defined(__aarch64__)
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}
SN_INLINE double sfma(double a, double b, double c) {
#if defined(__FMA__) || defined(__aarch64__)
    return std::fma(a, b, c);
#else
    return a * b + c;
#endif
}

template <class V> SN_INLINE V vsqrt(V x) {
    V r{};
    for (unsigned k = 0; k < sizeof(V) / sizeof(x[0]); k++) r[k] = std::sqrt(x[k]);
    return r;
}

// The sum of a vector's lanes, halving the width each step.
template <class T> SN_INLINE T hsum(typename Vec<T>::V v) {
    constexpr int N = Vec<T>::N;
    T lanes[N];
    std::memcpy(lanes, &v, sizeof v);
    for (int w = N / 2; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) lanes[k] += lanes[k + w];
    return lanes[0];
}

#if !defined(SN_NO_SHUFFLES) && (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12))
#define SN_SHUFFLES 1   // __builtin_shufflevector (GCC 12+, clang)
#endif

// The lane sums of K vectors at once (a transposing tree): K/2 + K/4 + ...
// adds of two shuffled vectors instead of K separate reductions.  merge
// takes two vectors holding N/S chunks of S partial sums each and returns
// one holding 2N/S chunks of S/2; fold does the same within one vector.
template <class T> struct Tree {
    using V = typename Vec<T>::V;
    static constexpr int N = Vec<T>::N;

#ifdef SN_SHUFFLES
    static constexpr int src(int p, int S) {
        int c = p / (S / 2), q = p % (S / 2);
        return c < N / S ? c * S + q : N + (c - N / S) * S + q;
    }
    static constexpr int own(int p, int S) {
        int c = p / (S / 2), q = p % (S / 2);
        return c < N / S ? c * S + q : 0;
    }
    template <int S, int... P>
    SN_INLINE static V merge(V a, V b, std::integer_sequence<int, P...>) {
        return __builtin_shufflevector(a, b, src(P, S)...) +
               __builtin_shufflevector(a, b, (src(P, S) + S / 2)...);
    }
    template <int S, int... P> SN_INLINE static V fold(V a, std::integer_sequence<int, P...>) {
        return __builtin_shufflevector(a, a, own(P, S)...) +
               __builtin_shufflevector(a, a, (own(P, S) + S / 2)...);
    }
    template <int K, int S> SN_INLINE static V reduce(const V *w) {   // K vectors, chunks of S
        if constexpr (K == 1) {
            if constexpr (S == 1) {
                return w[0];
            } else {
                V f = fold<S>(w[0], std::make_integer_sequence<int, N>{});
                return reduce<1, S / 2>(&f);
            }
        } else {
            V half[K / 2];
            for (int j = 0; j < K / 2; j++)
                half[j] = merge<S>(w[2 * j], w[2 * j + 1], std::make_integer_sequence<int, N>{});
            return reduce<K / 2, S / 2>(half);
        }
    }
#endif
    // out[k] = the lane sum of acc[k], k < K (K a power of two)
    template <int K> SN_INLINE static void sums(const V *acc, T *out) {
#ifndef SN_SHUFFLES
        for (int k = 0; k < K; k++) out[k] = hsum<T>(acc[k]);
#else
        if constexpr (K > N) {
            sums<N>(acc, out);
            sums<K - N>(acc + N, out + N);
        } else {
            V r = reduce<K, N>(acc);
            T lanes[N];
            std::memcpy(lanes, &r, sizeof r);
            for (int k = 0; k < K; k++) out[k] = lanes[k];
        }
#endif
    }
};

// The same, out of line: the tiles call it with their accumulators stored
// once, so its shuffle masks do not take registers from the tiles' loops.
template <class T, int K>
__attribute__((noinline)) void lane_sums(const typename Vec<T>::V *acc, T *out) {
    Tree<T>::template sums<K>(acc, out);
}

// ------------------------------------------------------- transcendentals
// exp(x) for float lanes: Cephes' polynomial on [-ln2/2, ln2/2] after
// x = n ln2 + r, then p * 2^n.  With AVX-512 one vscalefps does the 2^n,
// overflow to inf and underflow through the subnormals to 0; elsewhere
// 2^n is built in two halves of the exponent field, for the same range.
// NaN stays NaN, large x gives inf, very negative x gives 0.
SN_INLINE vf vexp(vf x) {
#if SN_VBYTES == 64
    const vf hi = splat<vf>(89.0f), lo = splat<vf>(-150.0f);   // 2^128 = inf, 2^-216 = 0
#else
    const vf hi = splat<vf>(88.72283935546875f), lo = splat<vf>(-103.97208404541016f);
#endif
#if SN_VBYTES == 64
    // min/max return their second operand when one is NaN: x, so NaN passes
    vf xc = (vf)_mm512_max_ps((__m512)lo, _mm512_min_ps((__m512)hi, (__m512)x));
#else
    vf xc = x > hi ? hi : x;   // comparisons are false for NaN: it passes through
    xc = xc < lo ? lo : xc;
#endif
    const vf magic = splat<vf>(12582912.0f);   // 1.5 * 2^23: rounds to an integer
    vf t = vfma(xc, splat<vf>(1.44269504088896341f), magic);
    vf n = t - magic;
    vf r = vfma(n, splat<vf>(-0.693359375f), xc);
    r = vfma(n, splat<vf>(2.12194440e-4f), r);
    vf p = splat<vf>(1.9875691500E-4f);
    p = vfma(p, r, splat<vf>(1.3981999507E-3f));
    p = vfma(p, r, splat<vf>(8.3334519073E-3f));
    p = vfma(p, r, splat<vf>(4.1665795894E-2f));
    p = vfma(p, r, splat<vf>(1.6666665459E-1f));
    p = vfma(p, r, splat<vf>(5.0000001201E-1f));
    p = vfma(p, r * r, r) + 1.0f;
#if SN_VBYTES == 64
    return (vf)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    vi32 ni = (vi32)t - (vi32)magic;
    vi32 n1 = ni >> 1;
    vi32 n2 = ni - n1;
    vf s1 = (vf)((n1 + 127) << 23), s2 = (vf)((n2 + 127) << 23);
    vf y = p * s1 * s2;
    y = x > hi ? splat<vf>(INFINITY) : y;
    return x < lo ? vf{} : y;
#endif
}

// exp(x) for double lanes: Cephes' Pade form.
SN_INLINE vd vexp(vd x) {
#if SN_VBYTES == 64
    const vd hi = splat<vd>(710.0), lo = splat<vd>(-1100.0);   // 2^1025 = inf, 2^-1587 = 0
#else
    const vd hi = splat<vd>(709.782712893384), lo = splat<vd>(-745.1332191019412);
#endif
    vd xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    const vd magic = splat<vd>(6755399441055744.0);   // 1.5 * 2^52
    vd t = vfma(xc, splat<vd>(1.4426950408889634073599), magic);
    vd n = t - magic;
    vd r = vfma(n, splat<vd>(-6.93145751953125E-1), xc);
    r = vfma(n, splat<vd>(-1.42860682030941723212E-6), r);
    vd rr = r * r;
    vd p = splat<vd>(1.26177193074810590878E-4);
    p = vfma(p, rr, splat<vd>(3.02994407707441961300E-2));
    p = vfma(p, rr, splat<vd>(9.99999999999999999910E-1));
    p = p * r;
    vd q = splat<vd>(3.00198505138664455042E-6);
    q = vfma(q, rr, splat<vd>(2.52448340349684104192E-3));
    q = vfma(q, rr, splat<vd>(2.27265548208155028766E-1));
    q = vfma(q, rr, splat<vd>(2.00000000000000000009E0));
    vd e = p / (q - p);
    e = vfma(e, splat<vd>(2.0), splat<vd>(1.0));
#if SN_VBYTES == 64
    return (vd)_mm512_scalef_pd((__m512d)e, (__m512d)n);
#else
    vi64 ni = (vi64)t - (vi64)magic;
    vi64 n1 = ni >> 1;
    vi64 n2 = ni - n1;
    vd s1 = (vd)((n1 + 1023) << 52), s2 = (vd)((n2 + 1023) << 52);
    vd y = e * s1 * s2;
    y = x > hi ? splat<vd>(INFINITY) : y;
    return x < lo ? vd{} : y;
#endif
}

// ln(x) for float lanes (Cephes' logf): x = m 2^e, m in [sqrt(1/2), sqrt 2).
// 0 gives -inf, negative numbers and NaN give NaN, inf gives inf.
SN_INLINE vf vlog(vf x) {
    const vi32 tiny = x < splat<vf>(1.17549435e-38f);           // subnormal: scale up
    vf xs = tiny ? x * 8388608.0f : x;
    vi32 bits = (vi32)xs;
    vi32 e = ((bits >> 23) & 0xff) - 126;
    e = tiny ? e - 23 : e;
    vf m = (vf)((bits & 0x007fffff) | 0x3f000000);             // [0.5, 1)
    vi32 small = m < splat<vf>(0.707106781186547524f);
    e = small ? e - 1 : e;
    m = small ? m + m - 1.0f : m - 1.0f;
    vf ef = __builtin_convertvector(e, vf);
    vf z = m * m;
    vf p = splat<vf>(7.0376836292E-2f);
    p = vfma(p, m, splat<vf>(-1.1514610310E-1f));
    p = vfma(p, m, splat<vf>(1.1676998740E-1f));
    p = vfma(p, m, splat<vf>(-1.2420140846E-1f));
    p = vfma(p, m, splat<vf>(1.4249322787E-1f));
    p = vfma(p, m, splat<vf>(-1.6668057665E-1f));
    p = vfma(p, m, splat<vf>(2.0000714765E-1f));
    p = vfma(p, m, splat<vf>(-2.4999993993E-1f));
    p = vfma(p, m, splat<vf>(3.3333331174E-1f));
    vf y = p * m * z;
    y = vfma(ef, splat<vf>(-2.12194440e-4f), y);
    y = vfma(z, splat<vf>(-0.5f), y);
    vf r = m + y;
    r = vfma(ef, splat<vf>(0.693359375f), r);
    r = x == 0.0f ? splat<vf>(-INFINITY) : r;
    r = x == splat<vf>(INFINITY) ? x : r;
    return (x < 0.0f) | (x != x) ? splat<vf>(NAN) : r;
}
SN_INLINE vd vlog(vd x) {   // float64 costs: libm, lane by lane
    vd r{};
    for (int k = 0; k < Vec<double>::N; k++) r[k] = std::log(x[k]);
    return r;
}
// ln(1 - a) without the cancellation of 1 - a for small a: with u = 1 - a
// rounded, ln(u) * (-a) / (u - 1) is accurate to a few ulps (Goldberg's log1p).
SN_INLINE vf vlog1m(vf a) {
    vf u = 1.0f - a;
    vf r = vlog(u) * (-a / (u - 1.0f));
    r = u == 1.0f ? -a : r;
    return u == splat<vf>(INFINITY) ? u : r;
}
SN_INLINE vd vlog1m(vd a) {   // ln(1 - a), as ATen's BCE (log1p(-a))
    vd r{};
    for (int k = 0; k < Vec<double>::N; k++) r[k] = std::log1p(-a[k]);
    return r;
}

// e^x - 1 for x <= 0 (elu): Taylor near 0, where e^x - 1 would cancel.
SN_INLINE vf vexpm1(vf x) {
    vf p = splat<vf>(1.0f / 40320);
    p = vfma(p, x, splat<vf>(1.0f / 5040));
    p = vfma(p, x, splat<vf>(1.0f / 720));
    p = vfma(p, x, splat<vf>(1.0f / 120));
    p = vfma(p, x, splat<vf>(1.0f / 24));
    p = vfma(p, x, splat<vf>(1.0f / 6));
    p = vfma(p, x, splat<vf>(0.5f));
    p = vfma(p * x, x, x);
    vf big = vexp(x) - 1.0f;
    return x < -0.35f ? big : p;
}
SN_INLINE vd vexpm1(vd x) {
    vd r{};
    for (int k = 0; k < Vec<double>::N; k++) r[k] = std::expm1(x[k]);
    return r;
}

// ------------------------------------------------------------ activations
enum Act : int64_t { SIGMOID = 0, TANH = 1, LINEAR = 2, RELU = 3, ELU = 4, SOFTMAX = 5 };
enum Cost : int64_t { QUADRATIC = 0, BINARY_CE = 1, CATEGORICAL_CE = 2 };
enum Opt : int64_t { PLAIN = 0, MOMENTUM = 1, NESTEROV = 2, ADAM = 3 };

template <class V> SN_INLINE V sigmoid(V z) { return 1.0 / (1.0 + vexp(-z)); }

// a = f(z) for the elementwise activations (softmax: z, normalised later).
template <class V> SN_INLINE V act_forward(int64_t act, V z) {
    switch (act) {
    case SIGMOID: return sigmoid(z);
    case TANH: {   // 2 sigma(2z) - 1, as the torch backend computes it
        V s = sigmoid(z + z);
        return vfma(s, V{} + 2.0, V{} - 1.0);
    }
    case RELU: return z < 0.0 ? V{} : z;
    case ELU: return z > 0.0 ? z : vexpm1(z);
    default: return z;   // linear, softmax
    }
}

// g * f'(z), the derivative read through a = f(z) (softmax: column-wise,
// handled by the caller).
template <class V> SN_INLINE V act_backward(int64_t act, V g, V a) {
    switch (act) {
    case SIGMOID: return g * (1.0 - a) * a;
    case TANH: return g * (1.0 - a * a);
    case RELU: return a <= 0.0 ? V{} : g;
    case ELU: return a > 0.0 ? g : g * (a + 1.0);
    default: return g;
    }
}

// ------------------------------------------------------------- the network
struct Net {                 // mirrored by ctypes in runner.py
    int64_t layers;          // L
    const int64_t *dims;     // L + 1 widths: in, out_1 .. out_L
    const int64_t *acts;     // L activation codes
    void *params;            // [W_1 .. W_L | b_1 .. b_L]
    void *grads;             // the same layout
    int64_t n_weights;
    int64_t n_params;
    double bias_sign;        // +1 standard, -1 the series' z = W a - b
    int64_t cost;            // Cost
    int64_t dtype;           // 0 float32, 1 float64
    int64_t block;           // samples per block, a multiple of the vector width
    void *workspace;         // sn_workspace_bytes(net) bytes
};

struct Data {
    const void *x;           // (in, stride) row-major
    const void *y;           // (out, stride)
    int64_t stride;          // columns of x and y
    const int64_t *index;    // sample order (mini-batches), or null: 0, 1, 2, ...
    const int64_t *steps;    // the batch size of every step of an epoch
    int64_t n_steps;
};

struct Optim {
    int64_t kind;            // Opt
    double eta, lam, mu, beta1, beta2, eps;
    void *velocity;          // momentum: n_weights
    void *m, *v;             // Adam: n_weights each
    void *count;             // Adam: t, one element of the network's dtype
};

SN_INLINE size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }

template <class T> struct Layout {
    // Per block: a_l for every layer, two gradient buffers (ping-pong),
    // the block's x and y, and a column-wise work row (softmax).
    T *a[64];
    T *g[2];
    T *x, *y, *work;
    size_t ld;   // row stride of every block buffer (= block)

    Layout(const Net &net) {
        const int64_t L = net.layers;
        ld = (size_t)net.block;
        int64_t widest = 1;
        for (int64_t l = 1; l <= L; l++) widest = net.dims[l] > widest ? net.dims[l] : widest;
        char *p = (char *)round_up((size_t)net.workspace, 64);
        auto take = [&](int64_t rows) {
            T *r = (T *)p;
            p += round_up((size_t)rows * ld * sizeof(T), 64);
            return r;
        };
        for (int64_t l = 0; l < L; l++) a[l] = take(net.dims[l + 1]);
        g[0] = take(widest);
        g[1] = take(widest);
        x = take(net.dims[0]);
        y = take(net.dims[L]);
        work = take(1);
    }

    static size_t bytes(const Net &net) {
        size_t rows = 2 + (size_t)net.dims[0] + (size_t)net.dims[net.layers];
        int64_t widest = 1;
        for (int64_t l = 1; l <= net.layers; l++) {
            rows += (size_t)net.dims[l];
            widest = net.dims[l] > widest ? net.dims[l] : widest;
        }
        rows += 2 * (size_t)widest;
        // each buffer rounded to 64 bytes, plus the alignment of the start
        return rows * (size_t)net.block * sizeof(T) + 64 * (size_t)(net.layers + 8);
    }
};

// Register tiles.  Forward and input-gradient products: RO output rows by
// CS vectors of samples; weight gradients: RO by RI dot products.
#if SN_REGS >= 32
constexpr int FW_RO = 8, FW_CS = 2, DW_RO = 4, DW_RI = 4;
#else
constexpr int FW_RO = 4, FW_CS = 2, DW_RO = 2, DW_RI = 4;
#endif

// out[r][s] = f(sum_i W[r][i] in[i][s] + sign b[r]), rows o .. o+RO-1 and
// vectors c0 .. c0+CS-1.  W is (rows, k) with row stride wr and column
// stride wc (so W^T is the same code), b may be null (no bias).
template <class T, int RO, int CS>
SN_INLINE void product_tile(const T *W, int64_t wr, int64_t wc, int64_t k, const T *b, T sign,
                         const T *in, size_t ld, T *out, int64_t o, int64_t c0, int64_t act,
                         const T *deriv /* a of the rows: g * f'(a) instead of f */) {
    using V = typename Vec<T>::V;
    constexpr int N = Vec<T>::N;
    V acc[RO][CS];
    for (int r = 0; r < RO; r++)
        for (int c = 0; c < CS; c++) acc[r][c] = V{};
    const T *w = W + o * wr;
    for (int64_t i = 0; i < k; i++) {
        V x[CS];
        for (int c = 0; c < CS; c++) x[c] = load<V>(in + i * ld + (c0 + c) * N);
        for (int r = 0; r < RO; r++) {
            V wv = splat<V>(w[r * wr + i * wc]);
            for (int c = 0; c < CS; c++) acc[r][c] = vfma(wv, x[c], acc[r][c]);
        }
    }
    for (int r = 0; r < RO; r++) {
        T *row = out + (o + r) * ld;
        if (deriv) {
            const T *arow = deriv + (o + r) * ld;
            for (int c = 0; c < CS; c++)
                store(row + (c0 + c) * N,
                      act_backward(act, acc[r][c], load<V>(arow + (c0 + c) * N)));
        } else {
            V bias = splat<V>(sign * b[o + r]);
            for (int c = 0; c < CS; c++)
                store(row + (c0 + c) * N, act_forward(act, acc[r][c] + bias));
        }
    }
}

template <class T, int RO>
inline void product_rows(const T *W, int64_t wr, int64_t wc, int64_t k, const T *b, T sign,
                         const T *in, size_t ld, T *out, int64_t o, int64_t nv, int64_t act,
                         const T *deriv) {
    int64_t c = 0;
    for (; c + FW_CS <= nv; c += FW_CS)
        product_tile<T, RO, FW_CS>(W, wr, wc, k, b, sign, in, ld, out, o, c, act, deriv);
    for (; c < nv; c++)
        product_tile<T, RO, 1>(W, wr, wc, k, b, sign, in, ld, out, o, c, act, deriv);
}

// All rows of out = f(W in + s b) (or g * f'(a) with deriv): nv vectors.
template <class T>
void product(const T *W, int64_t wr, int64_t wc, int64_t rows, int64_t k, const T *b, T sign,
             const T *in, size_t ld, T *out, int64_t nv, int64_t act, const T *deriv) {
    int64_t o = 0;
    for (; o + FW_RO <= rows; o += FW_RO)
        product_rows<T, FW_RO>(W, wr, wc, k, b, sign, in, ld, out, o, nv, act, deriv);
    if (rows - o >= 4 && FW_RO > 4) {
        product_rows<T, 4>(W, wr, wc, k, b, sign, in, ld, out, o, nv, act, deriv);
        o += 4;
    }
    if (rows - o >= 2) {
        product_rows<T, 2>(W, wr, wc, k, b, sign, in, ld, out, o, nv, act, deriv);
        o += 2;
    }
    if (rows - o >= 1) product_rows<T, 1>(W, wr, wc, k, b, sign, in, ld, out, o, nv, act, deriv);
}

// dW[o+r][i+j] += sum_s d[o+r][s] a[i+j][s]; with DB also db[o+r] += sum_s d.
template <class T, int RO, int RI, bool DB>
SN_INLINE void grad_tile(const T *d, const T *a, size_t ld, int64_t nv, T *dW, int64_t in, T *db,
                      int64_t o, int64_t i) {
    using V = typename Vec<T>::V;
    constexpr int N = Vec<T>::N;
    V acc[RO][RI], accb[RO];
    for (int r = 0; r < RO; r++) {
        accb[r] = V{};
        for (int j = 0; j < RI; j++) acc[r][j] = V{};
    }
    for (int64_t c = 0; c < nv; c++) {
        V dv[RO], av[RI];
        for (int r = 0; r < RO; r++) dv[r] = load<V>(d + (o + r) * ld + c * N);
        for (int j = 0; j < RI; j++) av[j] = load<V>(a + (i + j) * ld + c * N);
        for (int r = 0; r < RO; r++) {
            if (DB) accb[r] += dv[r];
            for (int j = 0; j < RI; j++) acc[r][j] = vfma(dv[r], av[j], acc[r][j]);
        }
    }
    T sum[RO * RI], sumb[RO];
    lane_sums<T, RO * RI>(&acc[0][0], sum);
    for (int r = 0; r < RO; r++)
        for (int j = 0; j < RI; j++) dW[(o + r) * in + i + j] += sum[r * RI + j];
    if (DB) {
        lane_sums<T, RO>(accb, sumb);
        for (int r = 0; r < RO; r++) db[o + r] += sumb[r];
    }
}

template <class T, int RO>
inline void grad_rows(const T *d, const T *a, size_t ld, int64_t nv, T *dW, int64_t in, T *db,
                      int64_t o) {
    int64_t i = 0;
    if (in >= DW_RI) {
        grad_tile<T, RO, DW_RI, true>(d, a, ld, nv, dW, in, db, o, 0);
        i = DW_RI;
        for (; i + DW_RI <= in; i += DW_RI) grad_tile<T, RO, DW_RI, false>(d, a, ld, nv, dW, in, db, o, i);
    } else {
        grad_tile<T, RO, 1, true>(d, a, ld, nv, dW, in, db, o, 0);
        i = 1;
    }
    for (; i < in; i++) grad_tile<T, RO, 1, false>(d, a, ld, nv, dW, in, db, o, i);
}

template <class T>
void weight_gradient(const T *d, const T *a, size_t ld, int64_t nv, T *dW, int64_t out,
                     int64_t in, T *db) {
    int64_t o = 0;
    for (; o + DW_RO <= out; o += DW_RO) grad_rows<T, DW_RO>(d, a, ld, nv, dW, in, db, o);
    if (DW_RO > 2 && out - o >= 2) {
        grad_rows<T, 2>(d, a, ld, nv, dW, in, db, o);
        o += 2;
    }
    for (; o < out; o++) grad_rows<T, 1>(d, a, ld, nv, dW, in, db, o);
}

// Softmax over each column (sample) of z (rows x nv vectors), in place:
// the column max is subtracted first, so e^z never overflows.
template <class T> void softmax_columns(T *z, size_t ld, int64_t rows, int64_t nv) {
    using V = typename Vec<T>::V;
    constexpr int N = Vec<T>::N;
    for (int64_t c = 0; c < nv; c++) {
        V mx = load<V>(z + c * N);
        for (int64_t r = 1; r < rows; r++) {
            V v = load<V>(z + r * ld + c * N);
            mx = v > mx ? v : mx;
        }
        V sum = V{};
        for (int64_t r = 0; r < rows; r++) {
            V e = vexp(load<V>(z + r * ld + c * N) - mx);
            store(z + r * ld + c * N, e);
            sum += e;
        }
        for (int64_t r = 0; r < rows; r++) store(z + r * ld + c * N, load<V>(z + r * ld + c * N) / sum);
    }
}

// g := a * (g - a^T g) per column: the softmax Jacobian-vector product.
template <class T> void softmax_backward(const T *a, T *g, size_t ld, int64_t rows, int64_t nv) {
    using V = typename Vec<T>::V;
    constexpr int N = Vec<T>::N;
    for (int64_t c = 0; c < nv; c++) {
        V dot = V{};
        for (int64_t r = 0; r < rows; r++)
            dot = vfma(load<V>(a + r * ld + c * N), load<V>(g + r * ld + c * N), dot);
        for (int64_t r = 0; r < rows; r++) {
            V av = load<V>(a + r * ld + c * N);
            store(g + r * ld + c * N, av * (load<V>(g + r * ld + c * N) - dot));
        }
    }
}

// --------------------------------------------------------------- one step
template <class T> struct Step {
    using V = typename Vec<T>::V;
    static constexpr int N = Vec<T>::N;

    const Net &net;
    Layout<T> lay;
    const T *W[64];
    const T *b[64];
    T *dW[64];
    T *db[64];

    explicit Step(const Net &n) : net(n), lay(n) {
        T *p = (T *)net.params, *g = (T *)net.grads;
        int64_t w = 0, bo = net.n_weights;
        for (int64_t l = 0; l < net.layers; l++) {
            W[l] = p + w;
            dW[l] = g + w;
            b[l] = p + bo;
            db[l] = g + bo;
            w += net.dims[l] * net.dims[l + 1];
            bo += net.dims[l + 1];
        }
    }

    // Copy the block's columns of x and y (through the index when given),
    // zero-padding the last vector.
    void gather(const Data &data, int64_t first, int64_t nb, int64_t nv) {
        const T *x = (const T *)data.x, *y = (const T *)data.y;
        const int64_t in = net.dims[0], out = net.dims[net.layers];
        const size_t ld = lay.ld;
        for (int pass = 0; pass < 2; pass++) {
            const T *src = pass ? y : x;
            T *dst = pass ? lay.y : lay.x;
            const int64_t rows = pass ? out : in;
            for (int64_t r = 0; r < rows; r++) {
                const T *s = src + r * data.stride;
                T *d = dst + r * ld;
                if (data.index) {
                    const int64_t *idx = data.index + first;
                    for (int64_t j = 0; j < nb; j++) d[j] = s[idx[j]];
                } else {
                    std::memcpy(d, s + first, (size_t)nb * sizeof(T));
                }
                for (int64_t j = nb; j < nv * N; j++) d[j] = 0;
            }
        }
    }

    void forward(int64_t nv) {
        const T sign = (T)net.bias_sign;
        const T *in = lay.x;
        for (int64_t l = 0; l < net.layers; l++) {
            const int64_t k = net.dims[l], rows = net.dims[l + 1], act = net.acts[l];
            product<T>(W[l], k, 1, rows, k, b[l], sign, in, lay.ld, lay.a[l], nv, act, nullptr);
            if (act == SOFTMAX) softmax_columns<T>(lay.a[l], lay.ld, rows, nv);
            in = lay.a[l];
        }
    }

    // The output gradient into g[0] (delta_L, lanes past nb zeroed) and the
    // block's cost sum into cost (when wanted).
    void output(int64_t nb, int64_t nv, bool want_cost, V &cost) {
        const int64_t L = net.layers, out = net.dims[L], act = net.acts[L - 1];
        const size_t ld = lay.ld;
        const T *a = lay.a[L - 1], *y = lay.y;
        T *g = lay.g[0];
        using I = typename Vec<T>::I;
        I lane;
        for (int k = 0; k < N; k++) lane[k] = k;
        const bool fused = net.cost != QUADRATIC;
        for (int64_t r = 0; r < out; r++) {
            for (int64_t c = 0; c < nv; c++) {
                V av = load<V>(a + r * ld + c * N), yv = load<V>(y + r * ld + c * N);
                V gv = av - yv;
                auto valid = lane < (I{} + (typename Vec<T>::E)(nb - c * N));
                if (want_cost) {
                    V term;
                    if (net.cost == QUADRATIC) {
                        term = gv * gv;
                    } else {
                        V la = vlog(av);
                        la = la < -100.0 ? V{} - 100.0 : la;
                        if (net.cost == BINARY_CE) {
                            V lb = vlog1m(av);
                            lb = lb < -100.0 ? V{} - 100.0 : lb;
                            // ATen: (y - 1) max(log1p(-a), -100) - y max(log a, -100)
                            term = (yv - 1.0) * lb - yv * la;
                        } else {
                            term = -(yv * la);
                        }
                    }
                    cost += valid ? term : V{};
                }
                if (!fused && act != SOFTMAX) gv = act_backward(act, gv, av);
                store(g + r * ld + c * N, valid ? gv : V{});
            }
        }
        if (!fused && act == SOFTMAX) softmax_backward<T>(a, g, ld, out, nv);
    }

    void backward(int64_t nv) {
        const size_t ld = lay.ld;
        int cur = 0;
        for (int64_t l = net.layers - 1; l >= 0; l--) {
            const int64_t in = net.dims[l], out = net.dims[l + 1];
            const T *aprev = l ? lay.a[l - 1] : lay.x;
            const T *d = lay.g[cur];
            weight_gradient<T>(d, aprev, ld, nv, dW[l], out, in, db[l]);
            if (l == 0) break;
            const int64_t pact = net.acts[l - 1];
            T *gp = lay.g[1 - cur];
            // g_prev = W^T delta: rows of W^T are W's columns (stride 1 down, in across)
            product<T>(W[l], 1, in, in, out, nullptr, 0, d, ld, gp, nv,
                       pact == SOFTMAX ? LINEAR : pact, aprev);
            if (pact == SOFTMAX) softmax_backward<T>(aprev, gp, ld, in, nv);
            cur = 1 - cur;
        }
    }

    // One step over samples [first, first + size) of the (indexed) data.
    // Returns the raw cost sum (when wanted); with train, fills grads.
    T run(const Data &data, int64_t first, int64_t size, bool train, bool want_cost) {
        if (train) std::memset(net.grads, 0, (size_t)net.n_params * sizeof(T));
        V cost = V{};
        const int64_t block = net.block;
        for (int64_t s0 = 0; s0 < size; s0 += block) {
            const int64_t nb = size - s0 < block ? size - s0 : block;
            const int64_t nv = (nb + N - 1) / N;
            gather(data, first + s0, nb, nv);
            forward(nv);
            output(nb, nv, want_cost, cost);
            if (train) backward(nv);
        }
        return hsum<T>(cost);
    }
};

// ------------------------------------------------------------- optimizers
// Each performs the torch backend's operations in its order
// (backends/torch_backend.py, nn/optim.py); y.add_(x, alpha=k) is
// fma(x, k, y), the scalars are rounded to the network's dtype as ATen
// rounds them.
template <class T> void sgd_update(const Net &net, const Optim &o, int64_t n, T *count) {
    T *p = (T *)net.params, *g = (T *)net.grads;
    const int64_t nw = net.n_weights, np = net.n_params;
    const T step = (T)(-o.eta / (double)n);
    if (o.kind == PLAIN) {
        if (o.lam) {
            const T lam = (T)o.lam;
            for (int64_t j = 0; j < nw; j++) g[j] = sfma(p[j], lam, g[j]);
        }
        for (int64_t j = 0; j < np; j++) p[j] = sfma(g[j], step, p[j]);
        return;
    }
    if (o.kind == MOMENTUM || o.kind == NESTEROV) {
        T *v = (T *)o.velocity;
        const double lr = o.eta / (double)n, decay = o.eta * o.lam / (double)n;
        const T mu = (T)o.mu, mlr = (T)(-lr), mdecay = (T)(-decay);
        for (int64_t j = 0; j < nw; j++) {
            T vj = sfma(g[j], mlr, v[j] * mu);
            v[j] = vj;
            T gj = o.kind == NESTEROV ? sfma(vj, mu, g[j] * mlr) : vj;
            if (decay) gj = sfma(p[j], mdecay, gj);
            g[j] = gj;
            p[j] = p[j] + gj;
        }
    } else {   // ADAM
        T *m = (T *)o.m, *v = (T *)o.v;
        const double t = (double)(*count + (T)1);
        *count = *count + (T)1;
        const T scale = (T)(1.0 / (double)n), b1 = (T)o.beta1, b2 = (T)o.beta2;
        const T c1 = (T)(1.0 - o.beta1), c2 = (T)(1.0 - o.beta2), eps = (T)o.eps;
        const T sqrt_c2 = (T)std::sqrt(1.0 - std::pow(o.beta2, t));
        const T mstep = (T)(-(o.eta / (1.0 - std::pow(o.beta1, t))));
        const double decay = o.eta * o.lam / (double)n;
        const T mdecay = (T)(-decay);
        for (int64_t j = 0; j < nw; j++) {
            T gj = g[j] * scale;
            T mj = sfma(gj, c1, m[j] * b1);
            T vj = sfma(c2 * gj, gj, v[j] * b2);   // ATen's addcmul: fma(value * t1, t2, self)
            m[j] = mj;
            v[j] = vj;
            T den = std::sqrt(vj) / sqrt_c2 + eps;
            T u = (mj / den) * mstep;
            if (decay) u = sfma(p[j], mdecay, u);
            g[j] = u;
            p[j] = p[j] + u;
        }
    }
    for (int64_t j = nw; j < np; j++) p[j] = sfma(g[j], step, p[j]);   // biases: plain SGD
}

template <class T>
int run(const Net &net, const Data &data, const Optim *opt, int64_t epochs, int64_t record,
        void *costs_out) {
    Step<T> step(net);
    T *costs = (T *)costs_out;
    const bool train = opt != nullptr;
    for (int64_t e = 0; e < epochs; e++) {
        int64_t first = 0;
        for (int64_t k = 0; k < data.n_steps; k++) {
            const int64_t size = data.steps[k];
            const bool want = costs && (record || e == epochs - 1);
            T raw = step.run(data, first, size, train, want);
            if (want) costs[(record ? e * data.n_steps : 0) + k] = raw;
            if (train) sgd_update<T>(net, *opt, size, (T *)opt->count);
            first += size;
        }
    }
    return 0;
}

template <class T> void math(int64_t fn, const T *in, T *out, int64_t n) {
    using V = typename Vec<T>::V;
    constexpr int N = Vec<T>::N;
    for (int64_t i = 0; i < n; i += N) {
        T lanes[N] = {};
        const int64_t m = n - i < N ? n - i : N;
        std::memcpy(lanes, in + i, (size_t)m * sizeof(T));
        V x = load<V>(lanes), r;
        switch (fn) {
        case 0: r = vexp(x); break;
        case 1: r = vlog(x); break;
        case 2: r = act_forward(SIGMOID, x); break;
        case 3: r = act_forward(TANH, x); break;
        case 4: r = act_forward(RELU, x); break;
        case 5: r = act_forward(ELU, x); break;
        default: r = vlog1m(x); break;
        }
        store(lanes, r);
        std::memcpy(out + i, lanes, (size_t)m * sizeof(T));
    }
}

}   // namespace

extern "C" {

// The core's fused multiply-add throughput: `iters` rounds of 16
// independent vector FMA chains (enough to cover the FMA latency on every
// current core), no memory traffic.  Returns the flops done; the caller
// times it (benchmark.py: the hardware's ceiling beside the GEMM rate).
int64_t sn_fma_peak(int64_t iters) {
    constexpr int C = 16;
    vf acc[C];
    for (int c = 0; c < C; c++) acc[c] = splat<vf>(1.0f + c * 1e-3f);
    const vf a = splat<vf>(0.999999f), b = splat<vf>(1e-7f);
    for (int64_t i = 0; i < iters; i++)
        for (int c = 0; c < C; c++) acc[c] = vfma(acc[c], a, b);
    vf sum{};
    for (int c = 0; c < C; c++) sum += acc[c];
    volatile float sink = hsum<float>(sum);
    (void)sink;
    return iters * C * (int64_t)(sizeof(vf) / sizeof(float)) * 2;
}

// Elementwise functions on n numbers (fn: 0 exp, 1 log, 2 sigmoid, 3 tanh,
// 4 relu, 5 elu, 6 ln(1 - x)): the kernels' own, for the accuracy tests.
int sn_math(int64_t fn, int64_t dtype, const void *in, void *out, int64_t n) {
    if (dtype)
        math<double>(fn, (const double *)in, (double *)out, n);
    else
        math<float>(fn, (const float *)in, (float *)out, n);
    return 0;
}

// Bytes of workspace a network needs (sn_run's net.workspace).
int64_t sn_workspace_bytes(const Net *net) {
    return (int64_t)(net->dtype ? Layout<double>::bytes(*net) : Layout<float>::bytes(*net));
}

// Lanes of a float vector in this build (what -march=native gave).
int64_t sn_vector_bytes(void) { return SN_VBYTES; }

// `epochs` epochs of data.n_steps steps each (opt null: forward and cost
// only, nothing updated).  Costs (none when costs is null): with record,
// step k of epoch e writes its raw cost sum to costs[e * n_steps + k];
// without, the last epoch's steps write costs[k].  Returns 0.
int sn_run(const Net *net, const Data *data, const Optim *opt, int64_t epochs, int64_t record,
           void *costs) {
    if (net->dtype) return run<double>(*net, *data, opt, epochs, record, costs);
    return run<float>(*net, *data, opt, epochs, record, costs);
}

// One optimizer update with the gradient already in net.grads (tests).
int sn_update(const Net *net, const Optim *opt, int64_t n) {
    if (net->dtype)
        sgd_update<double>(*net, *opt, n, (double *)opt->count);
    else
        sgd_update<float>(*net, *opt, n, (float *)opt->count);
    return 0;
}

}   // extern "C"
