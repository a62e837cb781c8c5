// Batched checkerboard swap Monte Carlo of a 2D mixture (host side: tglassmlp/physics/swap_mc_opencl.py,
// where the algorithm and its detailed-balance argument are written out).
//
// Portable OpenCL C 1.2: no vendor extensions besides cl_khr_fp64 (the host refuses devices without it).
// Positions and energies are double: an energy change is a difference of ~1e2 pair terms of size ~1, and
// the chain's tracked total (a sum of ~1e9 accepted changes) must agree with a fresh recomputation.
//
// Layout, chain b of B, N particles, M = m * m cells:
//   canonical: pos[b][i][2], unwrapped[b][i][2], types[b][i]   (the state; the order of i never changes)
//   per sweep (rebuilt by bin_chains from the canonical arrays): particles sorted by cell of the shifted grid,
//   sx, sy (coordinates u = x - offset wrapped into [0, box), in which cell c covers [cx cs, (cx + 1) cs)), st
//   (type), sidx (canonical index), sdx, sdy (accumulated displacement this sweep); sorted by key = 4 c + sub-cell,
//   cell_start[b][key] .. cell_start[b][key + 1] = that sub-cell's slots (see sub_key). finish_chains sets x = wrap(x + sdx), so an unmoved particle keeps
//   its coordinates bit for bit.
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

// ---------------------------------------------------------------------------------- Philox4x32-10
// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011): a bijection of a
// 128-bit counter under a 64-bit key that passes TestU01's BigCrush; any counter gives an independent-looking
// block, so each (chain, sweep, phase, cell, attempt) draws its own numbers without a stored generator state.
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

uint4 philox4x32_10(uint4 c, uint2 k) {
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k.x += PHILOX_W0;
            k.y += PHILOX_W1;
        }
        uint hi0 = mul_hi(PHILOX_M0, c.x);
        uint lo0 = PHILOX_M0 * c.x;
        uint hi1 = mul_hi(PHILOX_M1, c.z);
        uint lo1 = PHILOX_M1 * c.z;
        c = (uint4)(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
    }
    return c;
}

// uniform in [0, 1) with 32 random bits
inline double u01(uint r) { return (double)r * 2.3283064365386963e-10; }

__kernel void philox_blocks(__global const uint *counters, __global const uint *keys, __global uint *out) {
    // test hook: out[4 g .. 4 g + 3] = Philox4x32-10(counters[4 g ..], keys[2 g ..])
    size_t g = get_global_id(0);
    uint4 r = philox4x32_10(vload4(g, counters), vload2(g, keys));
    vstore4(r, g, out);
}

// counter word z of the grid-offset draw (phases use phase << 28 | cell with phase < 4)
#define OFFSET_WORD 0xFFFFFFFFu

// ---------------------------------------------------------------------------------- pair physics
// params: eps[9], sig2[9], rc2[9], ov2[9], c0, c2, c4 (tables indexed 3 a + b)
inline double pair_energy(double r2, int ab, __constant const double *p) {
    double s2 = p[9 + ab];
    double x = s2 / r2;
    double y = r2 / s2;
    double x3 = x * x * x;
    return 4.0 * p[ab] * (x3 * x3 - x3 + p[36] + p[37] * y + p[38] * y * y);
}

inline int cell_coord(double u, double inv_cs, int m) {
    int c = (int)(u * inv_cs);
    return c < m ? c : m - 1;  // u < box, but u * inv_cs can round up to m
}

// coordinate of x in the grid shifted by o: u = x - o wrapped into [0, box)
inline double shifted(double x, double o, double box) {
    double u = x - o;
    if (u < 0.0) {
        u += box;
        if (u >= box) u = 0.0;
    }
    return u;
}

// x wrapped into [0, box) for |x| < 2 box; the second test guards x + box rounding up to box
inline double wrapped(double x, double box) {
    if (x < 0.0) {
        x += box;
        if (x >= box) x = 0.0;
    } else if (x >= box) {
        x -= box;
    }
    return x;
}

// Sub-cells: each cell is split into 2 x 2 sub-cells of side cs / 2 (fine grid of 2m x 2m, coarse cell =
// fine index >> 1, one definition for binning and for the in-cell test). Particles are sorted by
// key = 4 (cell) + sub-cell, so a cell's particles are contiguous (slots cell_start[4c] .. cell_start[4c + 4])
// and each sub-cell's too. A neighbour sum visits the 5 x 5 sub-cells around the particle's sub-cell (>= a
// cutoff in every direction) instead of the 3 x 3 cells (~55 instead of ~80 particles at the paper's density).
inline int sub_key(double u, double v, double inv_fs, int m) {
    const int fx = cell_coord(u, inv_fs, 2 * m), fy = cell_coord(v, inv_fs, 2 * m);
    return (((fx >> 1) * m + (fy >> 1)) << 2) | ((fx & 1) << 1) | (fy & 1);
}

// ---------------------------------------------------------------------------------- 1. grid offset + bins
__kernel void bin_chains(const int n, const int m, const double box, const double cs, const uint seed_lo,
                         const uint seed_hi, const uint sweep, __global const double *pos,
                         __global const int *types, __global double *offsets, __global int *cell_start,
                         __global int *cell_fill, __global double *sx, __global double *sy, __global int *st,
                         __global int *sidx, __global double *sdx, __global double *sdy) {
    const int b = get_global_id(0);
    const int n_keys = 4 * m * m;
    const double inv_fs = 2.0 / cs;
    uint4 r = philox4x32_10((uint4)((uint)b, sweep, OFFSET_WORD, 0u), (uint2)(seed_lo, seed_hi));
    const double ox = u01(r.x) * cs;
    const double oy = u01(r.y) * cs;
    offsets[2 * b] = ox;
    offsets[2 * b + 1] = oy;
    __global const double *p = pos + (size_t)b * n * 2;
    __global const int *t = types + (size_t)b * n;
    __global int *start = cell_start + (size_t)b * (n_keys + 1);
    __global int *fill = cell_fill + (size_t)b * n_keys;
    for (int c = 0; c < n_keys; c++) fill[c] = 0;
    for (int i = 0; i < n; i++) fill[sub_key(shifted(p[2 * i], ox, box), shifted(p[2 * i + 1], oy, box), inv_fs, m)]++;
    int acc = 0;
    for (int c = 0; c < n_keys; c++) {
        start[c] = acc;
        acc += fill[c];
        fill[c] = 0;
    }
    start[n_keys] = acc;
    const size_t base = (size_t)b * n;
    for (int i = 0; i < n; i++) {
        const double u = shifted(p[2 * i], ox, box), v = shifted(p[2 * i + 1], oy, box);
        const int c = sub_key(u, v, inv_fs, m);
        size_t k = base + start[c] + fill[c]++;
        sx[k] = u;
        sy[k] = v;
        st[k] = t[i];
        sidx[k] = i;
        sdx[k] = 0.0;
        sdy[k] = 0.0;
    }
}

// ---------------------------------------------------------------------------------- 2. one colour phase
// Sums over every particle k of the 3x3 cells around (cx, cy) except the slots `self` and `other`. Coordinates
// are those of the shifted grid (u in [0, box)); a neighbour cell across the box edge is seen through its
// periodic image (shift by +-box per cell, not per pair). For m >= 4 every separation is then below 2 cs <=
// box / 2, i.e. the minimum image; for m == 2 (tiny boxes, the stencil is the whole box) each pair gets an
// explicit minimum image.
#define FOR_CELLS(...)                                                                       \
    {                                                                                         \
        /* m == 2: the cells left and right of cx are the same cell; visit it once */        \
        const int lo = (m == 2) ? 0 : -1;                                                     \
        for (int ddx = lo; ddx <= 1; ddx++) {                                                 \
            int nx = cx + ddx;                                                                \
            double shift_x = 0.0;                                                             \
            if (nx < 0) { nx += m; shift_x = -box; }                                          \
            else if (nx >= m) { nx -= m; shift_x = box; }                                     \
            for (int ddy = lo; ddy <= 1; ddy++) {                                             \
                int ny = cy + ddy;                                                            \
                double shift_y = 0.0;                                                         \
                if (ny < 0) { ny += m; shift_y = -box; }                                      \
                else if (ny >= m) { ny -= m; shift_y = box; }                                 \
                const int nc = 4 * (nx * m + ny);                                             \
                const int k1 = start[nc + 4];                                                 \
                for (int k = start[nc]; k < k1; k++) {                                        \
                    if (k == self || k == other) continue;                                    \
                    double xk = sx[base + k] + shift_x, yk = sy[base + k] + shift_y;          \
                    const int tk = st[base + k];                                              \
                    __VA_ARGS__                                                               \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

// m >= 4: the particles of the active cell (slots s0 .. s0 + n_c, whatever their sub-cell now: they move), then
// those of the 5 x 5 sub-cells around (X, Y) outside the active cell (inactive, so their sub-cells are valid)
#define FOR_SUBCELLS(X, Y, ...)                                                               \
    {                                                                                         \
        double shift_x = 0.0, shift_y = 0.0;                                                  \
        for (int k = s0; k < s0 + n_c; k++) {                                                 \
            if (k == self || k == other) continue;                                            \
            double xk = sx[base + k], yk = sy[base + k];                                      \
            const int tk = st[base + k];                                                      \
            __VA_ARGS__                                                                       \
        }                                                                                     \
        const int mf = 2 * m;                                                                 \
        const int fx = cell_coord((X), inv_fs, mf), fy = cell_coord((Y), inv_fs, mf);         \
        for (int dfx = -2; dfx <= 2; dfx++) {                                                 \
            int nx = fx + dfx;                                                                \
            shift_x = 0.0;                                                                    \
            if (nx < 0) { nx += mf; shift_x = -box; }                                         \
            else if (nx >= mf) { nx -= mf; shift_x = box; }                                   \
            const int own_x = (nx >> 1) == cx;                                                \
            for (int dfy = -2; dfy <= 2; dfy++) {                                             \
                int ny = fy + dfy;                                                            \
                shift_y = 0.0;                                                                \
                if (ny < 0) { ny += mf; shift_y = -box; }                                     \
                else if (ny >= mf) { ny -= mf; shift_y = box; }                               \
                if (own_x && (ny >> 1) == cy) continue;                                       \
                const int key = ((((nx >> 1) * m + (ny >> 1))) << 2) | ((nx & 1) << 1) | (ny & 1); \
                const int k1 = start[key + 1];                                                \
                for (int k = start[key]; k < k1; k++) {                                       \
                    double xk = sx[base + k] + shift_x, yk = sy[base + k] + shift_y;          \
                    const int tk = st[base + k];                                              \
                    __VA_ARGS__                                                               \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
    }

inline double tiny_box_image(double d, double box, double half_box) {
    return d > half_box ? d - box : (d < -half_box ? d + box : d);
}

// pair energy at squared distance r2 given 1 / r2, or 0 beyond the cutoff, as a select rather than a jump:
// the cutoff test is true for ~40 % of the visited pairs in no predictable order
inline double pair_or_zero(double r2, double inv_r2, int ab, __constant const double *p) {
    const double x = p[9 + ab] * inv_r2;   // (s / r)^2
    const double y = r2 * p[39 + ab];      // (r / s)^2
    const double x3 = x * x * x;
    const double v = 4.0 * p[ab] * (x3 * x3 - x3 + p[36] + p[37] * y + p[38] * y * y);
    return r2 < p[18 + ab] ? v : 0.0;
}

#define PAIR_DISPLACEMENT                                                                     \
    const int ab = 3 * ti + tk;                                                               \
    double dx = xk - x1, dy = yk - y1;                                                        \
    if (m == 2) { dx = tiny_box_image(dx, box, half_box); dy = tiny_box_image(dy, box, half_box); } \
    double r2 = dx * dx + dy * dy;                                                            \
    ov |= r2 < p[27 + ab];                                                                    \
    e += pair_or_zero(r2, 1.0 / r2, ab, p);                                                   \
    dx = xk - x0;                                                                             \
    dy = yk - y0;                                                                             \
    if (m == 2) { dx = tiny_box_image(dx, box, half_box); dy = tiny_box_image(dy, box, half_box); } \
    r2 = dx * dx + dy * dy;                                                                   \
    e -= pair_or_zero(r2, 1.0 / r2, ab, p);

#define PAIR_ENERGY_AT(X, Y, SIGN, OV)                                                        \
    const int ab = 3 * ti + tk;                                                               \
    const double dx = xk - (X), dy = yk - (Y);                                                \
    const double r2 = dx * dx + dy * dy;                                                      \
    if (OV) ov |= r2 < p[27 + ab];                                                            \
    e += SIGN pair_or_zero(r2, 1.0 / r2, ab, p);

#define GEOMETRY_ARGS                                                                         \
    int cx, int cy, int m, double box, double inv_fs, int s0, int n_c, size_t base,           \
    __global const int *start, __global const double *sx, __global const double *sy,         \
    __global const int *st, __constant const double *p

// energy change of moving slot `self` (type ti) from (x0, y0) to (x1, y1), both in the active cell;
// *overlap set if the new position is closer than the overlap distance to a particle
inline double displacement_delta(double x0, double y0, double x1, double y1, int ti, int self, GEOMETRY_ARGS,
                                 int *overlap) {
    const double half_box = 0.5 * box;
    const int other = -1;
    double e = 0.0;
    int ov = 0;
    if (m == 2) {
        FOR_CELLS(PAIR_DISPLACEMENT)
    } else if (cell_coord(x0, inv_fs, 2 * m) == cell_coord(x1, inv_fs, 2 * m) &&
               cell_coord(y0, inv_fs, 2 * m) == cell_coord(y1, inv_fs, 2 * m)) {
        // same sub-cell (most moves): one pass for both positions
        FOR_SUBCELLS(x0, y0, PAIR_DISPLACEMENT)
    } else {
        FOR_SUBCELLS(x1, y1, PAIR_ENERGY_AT(x1, y1, +, 1))
        FOR_SUBCELLS(x0, y0, PAIR_ENERGY_AT(x0, y0, -, 0))
    }
    *overlap |= ov;
    return e;
}

#define PAIR_RETYPE                                                                           \
    double dx = xk - x, dy = yk - y;                                                          \
    if (m == 2) { dx = tiny_box_image(dx, box, half_box); dy = tiny_box_image(dy, box, half_box); } \
    const double r2 = dx * dx + dy * dy;                                                      \
    const double inv_r2 = 1.0 / r2;                                                           \
    const int ab_new = 3 * t_new + tk;                                                        \
    ov |= r2 < p[27 + ab_new];                                                                \
    e += pair_or_zero(r2, inv_r2, ab_new, p) - pair_or_zero(r2, inv_r2, 3 * t_old + tk, p);

// energy change of slot `self` at (x, y) changing its type from t_old to t_new, without the slot `other`
inline double retype_delta(double x, double y, int t_old, int t_new, int self, int other, GEOMETRY_ARGS,
                           int *overlap) {
    const double half_box = 0.5 * box;
    double e = 0.0;
    int ov = 0;
    if (m == 2) {
        FOR_CELLS(PAIR_RETYPE)
    } else {
        FOR_SUBCELLS(x, y, PAIR_RETYPE)
    }
    *overlap |= ov;
    return e;
}

__kernel void sweep_phase(const int n, const int m, const double box, const double cs, const uint seed_lo,
                          const uint seed_hi, const uint sweep, const int phase, const double beta,
                          __global const double *steps, const double swap_fraction, const int n_pairs,
                          __constant const int *pairs, __constant const double *p,
                          __global const int *cell_start, __global double *sx,
                          __global double *sy, __global int *st, __global double *sdx, __global double *sdy,
                          __global double *cell_de, __global ulong *counters) {
    const int a = get_global_id(0);  // active cell of this colour
    const int b = get_global_id(1);  // chain
    const int m_half = m / 2;
    const int cx = 2 * (a / m_half) + (phase & 1);
    const int cy = 2 * (a % m_half) + (phase >> 1);
    const int n_cells = m * m;
    const int c = cx * m + cy;
    const double inv_fs = 2.0 / cs;
    const size_t base = (size_t)b * n;
    __global const int *start = cell_start + (size_t)b * (4 * n_cells + 1);
    const int s0 = start[4 * c];
    const int n_c = start[4 * c + 4] - s0;
    const uint2 key = (uint2)(seed_lo, seed_hi);
    const uint word = ((uint)phase << 28) | (uint)c;
    const double d = steps[b];  // each chain its own displacement step (adapted from its own acceptance)
    double de_sum = 0.0;
    ulong att_d = 0, acc_d = 0, att_s = 0, acc_s = 0;
    for (int t = 0; t < n_c; t++) {
        const uint4 r0 = philox4x32_10((uint4)((uint)b, sweep, word, 2u * (uint)t), key);
        // the acceptance draw (block 2 t + 1) is computed only when dE > 0 (same numbers either way)
        if (u01(r0.x) < swap_fraction) {
            att_s++;
            int k = (int)(u01(r0.y) * n_pairs);
            k = k < n_pairs ? k : n_pairs - 1;
            const int ta = pairs[2 * k], tb = pairs[2 * k + 1];
            int na = 0, nb = 0;
            for (int s = s0; s < s0 + n_c; s++) {
                int ts = st[base + s];
                na += ts == ta;
                nb += ts == tb;
            }
            if (na == 0 || nb == 0) continue;
            // the ia-th particle of type ta and the jb-th of type tb, in slot order
            int ia = (int)(u01(r0.z) * na), jb = (int)(u01(r0.w) * nb);
            ia = ia < na ? ia : na - 1;
            jb = jb < nb ? jb : nb - 1;
            int si = -1, sj = -1;
            for (int s = s0; s < s0 + n_c; s++) {
                int ts = st[base + s];
                if (ts == ta && ia-- == 0) si = s;
                if (ts == tb && jb-- == 0) sj = s;
            }
            const double xi = sx[base + si], yi = sy[base + si];
            const double xj = sx[base + sj], yj = sy[base + sj];
            int ov = 0;
            // the pair (i, j) itself is left out: V_ab(r_ij) = V_ba(r_ij)
            const double de = retype_delta(xi, yi, ta, tb, si, sj, cx, cy, m, box, inv_fs, s0, n_c, base, start, sx, sy, st, p, &ov)
                            + retype_delta(xj, yj, tb, ta, sj, si, cx, cy, m, box, inv_fs, s0, n_c, base, start, sx, sy, st, p, &ov);
            if (ov) continue;
            if (de <= 0.0 || u01(philox4x32_10((uint4)((uint)b, sweep, word, 2u * (uint)t + 1u), key).x) < exp(-beta * de)) {
                st[base + si] = tb;
                st[base + sj] = ta;
                de_sum += de;
                acc_s++;
            }
        } else {
            att_d++;
            int s = s0 + min((int)(u01(r0.y) * n_c), n_c - 1);
            const double dx = d * (2.0 * u01(r0.z) - 1.0);
            const double dy = d * (2.0 * u01(r0.w) - 1.0);
            const double x_old = sx[base + s], y_old = sy[base + s];
            const double x = x_old + dx, y = y_old + dy;
            // a move out of the active cell is rejected (its neighbours may be moving in another work-item);
            // the cell lies inside [0, box) in the shifted coordinates, so no wrapping is needed
            if (x < 0.0 || x >= box || y < 0.0 || y >= box || (cell_coord(x, inv_fs, 2 * m) >> 1) != cx ||
                (cell_coord(y, inv_fs, 2 * m) >> 1) != cy)
                continue;
            const int ti = st[base + s];
            int ov = 0;
            const double de = displacement_delta(x_old, y_old, x, y, ti, s, cx, cy, m, box, inv_fs, s0, n_c, base,
                                                 start, sx, sy, st, p, &ov);
            if (ov) continue;
            if (de <= 0.0 || u01(philox4x32_10((uint4)((uint)b, sweep, word, 2u * (uint)t + 1u), key).x) < exp(-beta * de)) {
                sx[base + s] = x;
                sy[base + s] = y;
                sdx[base + s] += dx;
                sdy[base + s] += dy;
                de_sum += de;
                acc_d++;
            }
        }
    }
    cell_de[(size_t)b * n_cells + c] = de_sum;
    __global ulong *cnt = counters + ((size_t)b * n_cells + c) * 4;
    cnt[0] += att_d;
    cnt[1] += acc_d;
    cnt[2] += att_s;
    cnt[3] += acc_s;
}

// ---------------------------------------------------------------------------------- 3. back to canonical order
__kernel void finish_chains(const int n, const int m, const double box, __global double *pos,
                            __global double *unwrapped,
                            __global int *types, __global const double *sx, __global const double *sy,
                            __global const int *st, __global const int *sidx, __global const double *sdx,
                            __global const double *sdy, __global const double *cell_de,
                            __global double *energy, __global double *trace, const int trace_slot,
                            const int trace_stride) {
    const int b = get_global_id(0);
    const size_t base = (size_t)b * n;
    for (int k = 0; k < n; k++) {
        const size_t i = base + sidx[base + k];
        const double dx = sdx[base + k], dy = sdy[base + k];
        if (dx != 0.0 || dy != 0.0) {
            pos[2 * i] = wrapped(pos[2 * i] + dx, box);
            pos[2 * i + 1] = wrapped(pos[2 * i + 1] + dy, box);
            unwrapped[2 * i] += dx;
            unwrapped[2 * i + 1] += dy;
        }
        types[i] = st[base + k];
    }
    // every cell was active once this sweep; fixed summation order keeps the chain reproducible
    double e = 0.0;
    const int n_cells = m * m;
    for (int c = 0; c < n_cells; c++) e += cell_de[(size_t)b * n_cells + c];
    energy[b] += e;
    // the energy after this sweep, recorded on the device (no host round trip per sweep); slot < 0: none
    if (trace_slot >= 0) trace[(size_t)b * trace_stride + trace_slot] = energy[b];
}
