/* Kernels for what comes after the series (scratchnet/nn/optim.py,
 * scratchnet/engine/reference.py, scratchnet/nn/activations.py, scratchnet/nn/costs.py):
 * elu, column-wise softmax, cross-entropy terms, the momentum and Adam
 * updates, and the column gather of mini-batches.  One work-item per element
 * (or per column for softmax, per output element for the gather); they are
 * memory bound and run once per layer or once per step, so they stay scalar.
 * Formulas are written once in the host files named above. */

/* a = elu(z) = z if z > 0 else e^z - 1 (alpha = 1); a may be z. */
__kernel void elu_forward(const int n, __global const REAL *z, const long z_off,
                          __global REAL *a, const long a_off) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const REAL v = z[z_off + i];
    a[a_off + i] = v > (REAL)(0) ? v : expm1(v);
}

/* g = g * elu'(z), through a = elu(z): 1 if a > 0 else a + 1. */
__kernel void elu_backward(const int n, __global const REAL *a, const long a_off,
                           __global REAL *g, const long g_off) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const REAL v = a[a_off + i];
    g[g_off + i] *= v > (REAL)(0) ? (REAL)(1) : v + (REAL)(1);
}

/* Softmax of every column j of the rows x cols matrix z (features are rows):
 * a = e^(z - max) / sum e^(z - max).  Work-item j walks its column; a may
 * be z (each element is read before it is written). */
__kernel void softmax_forward(const int rows, const int cols,
                              __global const REAL *z, const long z_off,
                              __global REAL *a, const long a_off) {
    const int j = get_global_id(0);
    if (j >= cols) return;
    z += z_off + j;
    a += a_off + j;
    REAL m = z[0];
    for (int r = 1; r < rows; ++r) {
        const REAL v = z[(size_t)r * cols];
        m = v > m ? v : m;
    }
    REAL s = 0;
    for (int r = 0; r < rows; ++r) {
        const REAL e = exp(z[(size_t)r * cols] - m);
        a[(size_t)r * cols] = e;
        s += e;
    }
    const REAL inv = (REAL)(1) / s;
    for (int r = 0; r < rows; ++r) a[(size_t)r * cols] *= inv;
}

/* g = a * (g - a^T g) per column: the softmax Jacobian times g. */
__kernel void softmax_backward(const int rows, const int cols,
                               __global const REAL *a, const long a_off,
                               __global REAL *g, const long g_off) {
    const int j = get_global_id(0);
    if (j >= cols) return;
    a += a_off + j;
    g += g_off + j;
    REAL s = 0;
    for (int r = 0; r < rows; ++r) s += a[(size_t)r * cols] * g[(size_t)r * cols];
    for (int r = 0; r < rows; ++r) {
        const size_t k = (size_t)r * cols;
        g[k] = a[k] * (g[k] - s);
    }
}

/* t = -(y ln a) (categorical) or -(y ln a + (1 - y) ln(1 - a)) (binary), each
 * ln floored at -100; the host sums t with the reduction kernels.  The
 * floor is written so that NaN passes it (NaN < -100 is false): an output
 * that blew up makes the cost NaN, which the divergence guard catches. */
__kernel void cross_entropy_terms(const int n, const int binary,
                                  __global const REAL *a, const long a_off,
                                  __global const REAL *y, const long y_off,
                                  __global REAL *t, const long t_off) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const REAL av = a[a_off + i];
    const REAL yv = y[y_off + i];
    const REAL floor_ = (REAL)(-100);
    REAL la = log(av);
    la = la < floor_ ? floor_ : la;          /* log(0) = -inf becomes -100 */
    REAL r = yv * la;
    if (binary) {
        REAL lb = log1p(-av);
        lb = lb < floor_ ? floor_ : lb;
        r += ((REAL)(1) - yv) * lb;
    }
    t[t_off + i] = -r;
}

/* Momentum (nesterov = 0) and Nesterov momentum on the flat weights:
 * v = mu v - lr g;  w = w + (v or mu v - lr g) - decay w. */
__kernel void momentum_update(const int n, const REAL lr, const REAL decay, const REAL mu,
                              const int nesterov,
                              __global REAL *w, const long w_off,
                              __global REAL *v, const long v_off,
                              __global const REAL *g, const long g_off) {
    const int i = get_global_id(0);
    if (i >= n) return;
    const REAL gi = g[g_off + i];
    const REAL vi = mu * v[v_off + i] - lr * gi;
    v[v_off + i] = vi;
    const REAL wi = w[w_off + i];
    const REAL step = nesterov ? mu * vi - lr * gi : vi;
    w[w_off + i] = wi + (step - decay * wi);
}

/* Adam on the flat weights, g^ = scale g:  m = b1 m + (1 - b1) g^;
 * v = b2 v + (1 - b2) g^2;  w = w - decay w - step m / (sqrt(v) / sqrt_c2 + eps);
 * and the step count t (count[0]) += 1, by work-item 0 (no other reads it). */
__kernel void adam_update(const int n, const REAL scale, const REAL beta1, const REAL beta2,
                          const REAL eps, const REAL step, const REAL sqrt_c2,
                          const REAL decay,
                          __global REAL *w, const long w_off,
                          __global REAL *m, const long m_off,
                          __global REAL *v, const long v_off,
                          __global const REAL *g, const long g_off,
                          __global REAL *count, const long count_off) {
    const int i = get_global_id(0);
    if (i == 0) count[count_off] += (REAL)(1);
    if (i >= n) return;
    const REAL gi = scale * g[g_off + i];
    const REAL mi = beta1 * m[m_off + i] + ((REAL)(1) - beta1) * gi;
    const REAL vi = beta2 * v[v_off + i] + ((REAL)(1) - beta2) * gi * gi;
    m[m_off + i] = mi;
    v[v_off + i] = vi;
    const REAL wi = w[w_off + i];
    w[w_off + i] = wi + (-step * mi / (sqrt(vi) / sqrt_c2 + eps) - decay * wi);
}

/* out[r, j] = src[r, index[j]]: out is rows x cols, src rows x src_cols.
 * Work-item (j, r); dimension 0 runs along a row of out (contiguous writes). */
__kernel void gather_columns(const int rows, const int cols, const int src_cols,
                             __global REAL *out, const long out_off,
                             __global const REAL *src, const long src_off,
                             __global const long *index, const long index_off) {
    const int j = get_global_id(0);
    const int r = get_global_id(1);
    if (j >= cols || r >= rows) return;
    out[out_off + (size_t)r * cols + j] = src[src_off + (size_t)r * src_cols
                                              + index[index_off + j]];
}
