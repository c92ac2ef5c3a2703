/* Elementwise kernels.  Each work-item handles VW consecutive elements with a
 * vector load/store; the work-item holding the last n % VW elements handles
 * them one by one.  Grid: ceil(n / VW) work-items, rounded up to the
 * work-group size. */

/* a = f(z) elementwise (a may be z). */
__kernel void activation_forward(const int n, const int act,
                                 __global const REAL *z, const long z_off,
                                 __global REAL *a, const long a_off) {
    const int i = get_global_id(0) * VW;
    if (i >= n) return;
    z += z_off + i;
    a += a_off + i;
    if (i + VW <= n) {
        const REALV v = VLOAD(z);
        VSTORE(activate_v(act, v), a);
    } else {
        for (int t = 0; t < n - i; ++t) a[t] = activate(act, z[t]);
    }
}

/* g = g ⊙ f'(z), in place, with f' written through a = f(z). */
__kernel void activation_backward(const int n, const int act,
                                  __global const REAL *a, const long a_off,
                                  __global REAL *g, const long g_off) {
    const int i = get_global_id(0) * VW;
    if (i >= n) return;
    a += a_off + i;
    g += g_off + i;
    if (i + VW <= n) {
        const REALV av = VLOAD(a);
        const REALV gv = VLOAD(g);
        VSTORE(derivative_v(act, av, gv), g);
    } else {
        for (int t = 0; t < n - i; ++t) g[t] = derivative(act, a[t], g[t]);
    }
}

/* out = x + alpha y, elementwise: subtract is alpha = -1 (out = a - y),
 * axpy is out = y with y := y + alpha x.  out may alias x or y. */
__kernel void axpby(const int n, const REAL alpha,
                    __global const REAL *x, const long x_off,
                    __global const REAL *y, const long y_off,
                    __global REAL *out, const long out_off) {
    const int i = get_global_id(0) * VW;
    if (i >= n) return;
    x += x_off + i;
    y += y_off + i;
    out += out_off + i;
    if (i + VW <= n) {
        const REALV xv = VLOAD(x);
        const REALV yv = VLOAD(y);
        VSTORE(xv + (REALV)(alpha) * yv, out);
    } else {
        for (int t = 0; t < n - i; ++t) out[t] = x[t] + alpha * y[t];
    }
}

/* out = in^T: in is rows x cols, out is cols x rows, both row-major.
 * Work-item (r, c) copies in[r, c] to out[c, r]; dimension 0 runs along
 * in's rows so that reads are contiguous.  Grid: (cols, rows), rounded up. */
__kernel void transpose(const int rows, const int cols,
                        __global const REAL *in, const long in_off,
                        __global REAL *out, const long out_off) {
    const int c = get_global_id(0);
    const int r = get_global_id(1);
    if (c >= cols || r >= rows) return;
    out[out_off + (size_t)c * rows + r] = in[in_off + (size_t)r * cols + c];
}
