/* Matrix products for a fully connected layer, shaped for its tall-skinny
 * operands: a few dozen features by many thousands of samples.
 *
 * Both products that produce a (features x samples) matrix are one kernel,
 * `small_gemm`, with the small left factor addressed through strides:
 *
 *   forward        z = W a + s b 1^T          A = W   (a_rs = in, a_cs = 1)
 *   fused forward  a = f(W a_prev + s b 1^T)  same, with act != 0
 *   input grad     g = W^T delta              A = W^T (a_rs = 1, a_cs = in)
 *
 * The weight gradient reduces over the samples instead and has its own pair
 * of kernels, `wgrad_partial` and `wgrad_finish`.
 */

/* C[m, j] = f( sum_k A[m, k] B[k, j] + bias_sign * bias[m] )
 *
 * A is M x K with A[m, k] = A[m * a_rs + k * a_cs]; B is K x n and C is
 * M x n, both row-major.  bias_sign = 0 skips the bias; act = ACT_LINEAR
 * skips f.
 *
 * One work-item computes TM rows by VW consecutive columns: each B vector it
 * loads feeds TM fused multiply-adds with a broadcast entry of A, so B (the
 * big operand) is read ceil(M / TM) times in all.  The last work-item of a
 * row handles the n % VW leftover columns one by one.
 * Grid: (ceil(n / VW) rounded up to the work-group size, ceil(M / TM)). */
__kernel void small_gemm(const int M, const int K, const int n,
                         __global const REAL *A, const long a_off,
                         const int a_rs, const int a_cs,
                         __global const REAL *B, const long b_off,
                         __global const REAL *bias, const long bias_off,
                         const REAL bias_sign, const int act,
                         __global REAL *C, const long c_off) {
    const int j = get_global_id(0) * VW;
    const int m0 = get_global_id(1) * TM;
    if (j >= n || m0 >= M) return;
    A += a_off;
    B += b_off + j;
    C += c_off + j;
    bias += bias_off;

    /* Rows past M repeat row M - 1 (valid memory); their results are dropped. */
    __global const REAL *arow[TM];
#pragma unroll
    for (int r = 0; r < TM; ++r) arow[r] = A + (size_t)MIN(m0 + r, M - 1) * a_rs;

    if (j + VW <= n) {
        REALV acc[TM];
#pragma unroll
        for (int r = 0; r < TM; ++r) acc[r] = (REALV)(0);
        __global const REAL *bp = B;
        for (int k = 0; k < K; ++k, bp += n) {
            const REALV bv = VLOAD(bp);
            const int kc = k * a_cs;
#pragma unroll
            for (int r = 0; r < TM; ++r) acc[r] += arow[r][kc] * bv;
        }
        for (int r = 0; r < TM && m0 + r < M; ++r) {
            const size_t row = (size_t)(m0 + r) * n;
            REALV v = acc[r];
            if (bias_sign != 0) v += bias_sign * bias[m0 + r];
            VSTORE(activate_v(act, v), C + row);
        }
    } else {
        for (int jj = 0; jj < n - j; ++jj) {
            REAL acc[TM];
#pragma unroll
            for (int r = 0; r < TM; ++r) acc[r] = 0;
            for (int k = 0; k < K; ++k) {
                const REAL bv = B[(size_t)k * n + jj];
                const int kc = k * a_cs;
#pragma unroll
                for (int r = 0; r < TM; ++r) acc[r] += arow[r][kc] * bv;
            }
            for (int r = 0; r < TM && m0 + r < M; ++r) {
                const size_t row = (size_t)(m0 + r) * n;
                REAL v = acc[r];
                if (bias_sign != 0) v += bias_sign * bias[m0 + r];
                C[row + jj] = activate(act, v);
            }
        }
    }
}

/* Weight gradient, stage 1 of 2:
 *
 *   P[c, i, k]  = sum_{j in part c} delta[i, j] a[k, j]     (k < in:  dW)
 *   P[c, i, in] = sum_{j in part c} delta[i, j]             (db)
 *
 * delta is out x n, a is in x n.  A work-item owns one TI x TK tile of
 * (i, k) and one part c of the columns; it reads TI + TK vectors per step
 * for TI * TK fused multiply-adds, and sums delta on the side for db
 * (written by the tiles with k0 = 0).  Which columns make part c:
 *   STRIDED = 0 (CPU layout)  the contiguous chunk [c * span, (c + 1) * span),
 *                             span a multiple of VW: one core streams it;
 *   STRIDED = 1 (GPU layout)  columns c * VW + t * span * VW, t = 0, 1, ...,
 *                             span being the number of parts: neighbouring
 *                             work-items read neighbouring columns
 *                             (coalesced); part 0 also takes the n % VW
 *                             leftover columns.
 * With `direct` set there is one part and the tile writes straight into dw
 * (out x in) and db (out); otherwise it writes its partial sums to P, laid
 * out [part][out][in + 1], and wgrad_finish adds the parts up in a fixed
 * order (deterministic).
 * Grid: (number of parts, ceil(out / TI) * ceil(in / TK)), rounded up. */
__kernel void wgrad_partial(const int out, const int in, const int n, const int span,
                            __global const REAL *delta, const long delta_off,
                            __global const REAL *a, const long a_off,
                            const int direct,
                            __global REAL *dw, const long dw_off,
                            __global REAL *db, const long db_off,
                            __global REAL *P) {
    const int c = get_global_id(0);
    const int kblocks = (in + TK - 1) / TK;
    const int tile = get_global_id(1);
    const int i0 = (tile / kblocks) * TI;
    const int k0 = (tile % kblocks) * TK;
    if (i0 >= out) return;
#if STRIDED
    if (c >= span) return;
    const int jstart = c * VW, jstep = span * VW, jvend = n - n % VW;
    const int tail0 = c == 0 ? jvend : n, tail1 = n;
#else
    const int jstart = c * span, jstep = VW;
    const int tail1 = MIN(jstart + span, n);
    const int jvend = jstart + (tail1 - jstart) / VW * VW, tail0 = jvend;
#endif

    /* Rows past the matrix repeat its last row; their sums are dropped. */
    __global const REAL *drow[TI];
    __global const REAL *arow[TK];
    #pragma unroll
    for (int r = 0; r < TI; ++r) drow[r] = delta + delta_off + (size_t)MIN(i0 + r, out - 1) * n;
    #pragma unroll
    for (int s = 0; s < TK; ++s) arow[s] = a + a_off + (size_t)MIN(k0 + s, in - 1) * n;

    REALV acc[TI][TK];
    REALV dsum[TI];
    #pragma unroll
    for (int r = 0; r < TI; ++r) {
        dsum[r] = (REALV)(0);
        #pragma unroll
        for (int s = 0; s < TK; ++s) acc[r][s] = (REALV)(0);
    }
    for (int j = jstart; j < jvend; j += jstep) {
        REALV av[TK];
        #pragma unroll
        for (int s = 0; s < TK; ++s) av[s] = VLOAD(arow[s] + j);
        #pragma unroll
        for (int r = 0; r < TI; ++r) {
            const REALV dv = VLOAD(drow[r] + j);
            dsum[r] += dv;
            #pragma unroll
            for (int s = 0; s < TK; ++s) acc[r][s] += dv * av[s];
        }
    }
    REAL tacc[TI][TK];
    REAL tsum[TI];
    #pragma unroll
    for (int r = 0; r < TI; ++r) {
        tsum[r] = hsum(dsum[r]);
        #pragma unroll
        for (int s = 0; s < TK; ++s) tacc[r][s] = hsum(acc[r][s]);
    }
    for (int j = tail0; j < tail1; ++j) { /* the n % VW leftover columns */
        #pragma unroll
        for (int r = 0; r < TI; ++r) {
            const REAL dv = drow[r][j];
            tsum[r] += dv;
            #pragma unroll
            for (int s = 0; s < TK; ++s) tacc[r][s] += dv * arow[s][j];
        }
    }

    const int stride = in + 1;
    __global REAL *part = P + (size_t)c * out * stride;
    for (int r = 0; r < TI && i0 + r < out; ++r) {
        const int i = i0 + r;
        for (int s = 0; s < TK && k0 + s < in; ++s) {
            if (direct) dw[dw_off + (size_t)i * in + k0 + s] = tacc[r][s];
            else part[(size_t)i * stride + k0 + s] = tacc[r][s];
        }
        if (k0 == 0) {
            if (direct) db[db_off + i] = tsum[r];
            else part[(size_t)i * stride + in] = tsum[r];
        }
    }
}

/* Weight gradient, stage 2 of 2:  dW[i, k] = sum_c P[c, i, k],
 * db[i] = sum_c P[c, i, in], summed over the parts in order.
 * Grid: out * (in + 1) work-items (rounded up). */
__kernel void wgrad_finish(const int out, const int in, const int chunks,
                           __global const REAL *P,
                           __global REAL *dw, const long dw_off,
                           __global REAL *db, const long db_off) {
    const int idx = get_global_id(0);
    const int stride = in + 1;
    const int total = out * stride;
    if (idx >= total) return;
    REAL s = 0;
    for (int c = 0; c < chunks; ++c) s += P[(size_t)c * total + idx];
    const int i = idx / stride;
    const int k = idx % stride;
    if (k < in) dw[dw_off + (size_t)i * in + k] = s;
    else db[db_off + i] = s;
}
