/* Reductions of a whole array to one number, in two stages so that a large
 * array is spread over many work-items and the sum order stays fixed
 * (deterministic across runs):
 *
 *   op 0  sum of squares   s = sum_i x_i^2            (the quadratic cost)
 *   op 1  max magnitude    m = max_i |x_i|, NaN if any x_i is NaN
 *                          (amax; all_finite is "m is finite")
 *   op 2  sum              s = sum_i x_i               (cross-entropy terms)
 *
 * CPU layout, for a device whose work-group is a loop on one core:
 * Stage 1 (reduce_partial): work-item c reduces elements
 * [c * chunk, min((c + 1) * chunk, n)) with VW-wide vectors; with `direct`
 * (one chunk) it writes the result to out[0], else to P[c].
 * Stage 2 (reduce_finish): one work-item combines P[0 .. parts) into out[0].
 *
 * GPU layout (reduce_tree, run twice: into P, then P into out): strided,
 * coalesced loads by many work-groups and a tree in local memory.
 *
 * The result stays on the device: nothing here synchronises with the host. */

/* Combine step for op 1 on scalars or vectors: the NaN sticks once seen
 * (v != v is the NaN test; the kernels are built without fast-math). */
#define MAXABS(m, v) ((v) != (v) || (v) > (m) ? (v) : (m))
#define ABS(T, v) ((v) < (T)(0) ? -(v) : (v))

__kernel void reduce_partial(const int op, const int n, const int chunk,
                             __global const REAL *x, const long x_off,
                             const int direct,
                             __global REAL *out, const long out_off,
                             __global REAL *P) {
    const int c = get_global_id(0);
    const int i0 = c * chunk;
    if (i0 >= n && c > 0) return;  /* work-item 0 always writes: n = 0 gives 0 */
    const int i1 = MIN(i0 + chunk, n);
    x += x_off;
    int i = i0;
    REAL r;
    if (op == 0) {
        REALV acc = (REALV)(0);
        for (; i + VW <= i1; i += VW) {
            const REALV v = VLOAD(x + i);
            acc += v * v;
        }
        r = hsum(acc);
        for (; i < i1; ++i) r += x[i] * x[i];
    } else if (op == 2) {
        REALV acc = (REALV)(0);
        for (; i + VW <= i1; i += VW) acc += VLOAD(x + i);
        r = hsum(acc);
        for (; i < i1; ++i) r += x[i];
    } else {
        REALV m = (REALV)(0);
        for (; i + VW <= i1; i += VW) {
            const REALV x_ = VLOAD(x + i);
            const REALV v = ABS(REALV, x_);
            m = MAXABS(m, v);
        }
#if VW == 1
        r = m;
#else
        r = 0;
        for (int t = 0; t < VW; ++t) {
            const REAL v = ((REAL *)&m)[t];
            r = MAXABS(r, v);
        }
#endif
        for (; i < i1; ++i) {
            const REAL v = ABS(REAL, x[i]);
            r = MAXABS(r, v);
        }
    }
    if (direct) out[out_off] = r;
    else P[c] = r;
}

__kernel void reduce_finish(const int op, const int parts, __global const REAL *P,
                            __global REAL *out, const long out_off) {
    if (get_global_id(0) != 0) return;
    REAL r = 0;
    for (int c = 0; c < parts; ++c) {
        if (op != 1) r += P[c];
        else r = MAXABS(r, P[c]);
    }
    out[out_off] = r;
}

/* One combine step of op on two partial results (sums, or maxima of |x|). */
#define COMBINE(op, a, b) ((op) == 1 ? MAXABS(a, b) : (a) + (b))

/* GPU layout: work-item g of G reduces x[g], x[g + G], x[g + 2G], ...
 * (neighbouring work-items read neighbouring elements), then each work-group
 * of L work-items (L a power of two) combines its L results as a tree in
 * `tmp` (L elements of local memory) and writes one result to
 * out[out_off + group].  A second launch with one work-group reduces the
 * groups' results.  The order is fixed by n, L and G: deterministic. */
__kernel void reduce_tree(const int op, const int n,
                          __global const REAL *x, const long x_off,
                          __global REAL *out, const long out_off,
                          __local REAL *tmp) {
    const int l = get_local_id(0);
    const int L = get_local_size(0);
    const int G = get_global_size(0);
    x += x_off;
    REAL r = 0;
    for (int i = get_global_id(0); i < n; i += G) {
        const REAL v = x[i];
        if (op == 0) r += v * v;
        else if (op == 2) r += v;
        else {
            const REAL m = ABS(REAL, v);
            r = MAXABS(r, m);
        }
    }
    tmp[l] = r;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = L / 2; s > 0; s >>= 1) {
        if (l < s) tmp[l] = COMBINE(op, tmp[l], tmp[l + s]);
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (l == 0) out[out_off + get_group_id(0)] = tmp[0];
}
