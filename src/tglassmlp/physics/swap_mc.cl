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
//   (type), sidx (canonical index), sdx, sdy (accumulated displacement this sweep); cell_start[b][c] ..
//   cell_start[b][c + 1] = cell c's slots. finish_chains sets x = wrap(x + sdx), so an unmoved particle keeps its
//   coordinates bit for bit.
// The move kernel gathers each active cell's candidates into private arrays and sums over them in double8 (see
// "2. one colour phase"); build option -DK_MAX = the capacity of those arrays.
#pragma OPENCL EXTENSION cl_khr_fp64 : enable

// ---------------------------------------------------------------------------------- Philox4x32-10
// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3" (SC 2011): a bijection of a
// 128-bit counter under a 64-bit key that passes TestU01's BigCrush; any counter gives an independent-looking
// block, so each (chain, sweep, phase, cell, attempt) draws its own numbers without a stored generator state.
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

// one round on scalars (uint4 component shuffles compile to vector inserts and extracts on PoCL: 2x slower);
// one 32 x 32 -> 64-bit product per multiplier (PoCL's mul_hi(uint) is built from 16-bit pieces)
#define PHILOX_ROUND(k0, k1)                                                                  \
    {                                                                                         \
        const ulong p0 = (ulong)PHILOX_M0 * c0, p1 = (ulong)PHILOX_M1 * c2;                   \
        const uint n0 = (uint)(p1 >> 32) ^ c1 ^ (k0), n2 = (uint)(p0 >> 32) ^ c3 ^ (k1);      \
        c1 = (uint)p1;                                                                        \
        c3 = (uint)p0;                                                                        \
        c0 = n0;                                                                              \
        c2 = n2;                                                                              \
    }

uint4 philox4x32_10(uint4 c, uint2 k) {
    uint c0 = c.x, c1 = c.y, c2 = c.z, c3 = c.w;
    const uint k0 = k.x, k1 = k.y;
    PHILOX_ROUND(k0, k1)
    PHILOX_ROUND(k0 + 1u * PHILOX_W0, k1 + 1u * PHILOX_W1)
    PHILOX_ROUND(k0 + 2u * PHILOX_W0, k1 + 2u * PHILOX_W1)
    PHILOX_ROUND(k0 + 3u * PHILOX_W0, k1 + 3u * PHILOX_W1)
    PHILOX_ROUND(k0 + 4u * PHILOX_W0, k1 + 4u * PHILOX_W1)
    PHILOX_ROUND(k0 + 5u * PHILOX_W0, k1 + 5u * PHILOX_W1)
    PHILOX_ROUND(k0 + 6u * PHILOX_W0, k1 + 6u * PHILOX_W1)
    PHILOX_ROUND(k0 + 7u * PHILOX_W0, k1 + 7u * PHILOX_W1)
    PHILOX_ROUND(k0 + 8u * PHILOX_W0, k1 + 8u * PHILOX_W1)
    PHILOX_ROUND(k0 + 9u * PHILOX_W0, k1 + 9u * PHILOX_W1)
    return (uint4)(c0, c1, c2, c3);
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
// params: eps[9], sig2[9], rc2[9], ov2[9], c0, c2, c4, 1 / sig2[9], cutoff^2, overlap^2 (in sigma_ab), 4 eps[9]
// (tables indexed 3 a + b)
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

// ---------------------------------------------------------------------------------- 1. grid offset + bins
// Particles are sorted by cell of the shifted grid (a stable counting sort: within a cell, canonical order), so a
// cell's particles are the slots cell_start[c] .. cell_start[c + 1]. cell_coord with 1 / cs is the one
// definition of "in cell c", for the binning and for the in-cell test of a displacement.
__kernel void bin_chains(const int n, const int m, const double box, const double cs, const uint seed_lo,
                         const uint seed_hi, const uint sweep, __global const double *pos,
                         __global const int *types, __global double *offsets, __global int *cell_start,
                         __global int *cell_fill, __global double *sx, __global double *sy, __global int *st,
                         __global int *sidx, __global double *sdx, __global double *sdy) {
    const int b = get_global_id(0);
    const int n_cells = m * m;
    const double inv_cs = 1.0 / cs;
    uint4 r = philox4x32_10((uint4)((uint)b, sweep, OFFSET_WORD, 0u), (uint2)(seed_lo, seed_hi));
    const double ox = u01(r.x) * cs;
    const double oy = u01(r.y) * cs;
    offsets[2 * b] = ox;
    offsets[2 * b + 1] = oy;
    __global const double *p = pos + (size_t)b * n * 2;
    __global const int *t = types + (size_t)b * n;
    __global int *start = cell_start + (size_t)b * (n_cells + 1);
    __global int *fill = cell_fill + (size_t)b * n_cells;
    for (int c = 0; c < n_cells; c++) fill[c] = 0;
    for (int i = 0; i < n; i++)
        fill[cell_coord(shifted(p[2 * i], ox, box), inv_cs, m) * m +
             cell_coord(shifted(p[2 * i + 1], oy, box), inv_cs, m)]++;
    int acc = 0;
    for (int c = 0; c < n_cells; c++) {
        start[c] = acc;
        acc += fill[c];
        fill[c] = 0;
    }
    start[n_cells] = acc;
    const size_t base = (size_t)b * n;
    for (int i = 0; i < n; i++) {
        const double u = shifted(p[2 * i], ox, box), v = shifted(p[2 * i + 1], oy, box);
        const int c = cell_coord(u, inv_cs, m) * m + cell_coord(v, inv_cs, m);
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
// Fast path (m >= 4, the usual case). The neighbourhood of an active cell is frozen during its phase except for
// the cell's own particles, so it is gathered once per cell into private arrays: the cell's own particles first
// (local index l = slot - s0, updated as they move or swap), then the particles of the 8 cells around it that lie
// within `reach` (> the largest cutoff) of the cell's square. Every move of the cell then sums over one
// contiguous array, VW = 8 candidates at a time in double8 arithmetic (one AVX-512 register, two AVX ones, or 8
// scalar lanes on a GPU), branch-free: a pair beyond its cutoff, the mover itself and the padding (far away) add
// exactly 0.0 through a select. The sum of the 8 lanes is taken in a fixed order, so a chain does not depend on
// the device's vector width. Cells with more than K_MAX candidates (never seen at the paper's density: ~65 on
// average at N = 1290) and tiny boxes (m = 2) take the scalar path over the 3 x 3 cells in global memory.
#ifndef K_MAX
#define K_MAX 128
#endif
#define VW 8
#define FAR 1.0e6  // padding coordinate: r2 ~ 1e12, beyond every cutoff and harmless in the pair formula

// ----- scalar path: every particle k of the 3x3 cells around (cx, cy) except the slots `self` and `other`.
// A neighbour cell across the box edge is seen through its periodic image (shift by +-box per cell, not per
// pair). For m >= 4 every separation is then below 2 cs <= box / 2, i.e. the minimum image; for m == 2 (tiny
// boxes, the stencil is the whole box) each pair gets an explicit minimum image.
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
                const int nc = nx * m + ny;                                                   \
                const int k1 = start[nc + 1];                                                 \
                for (int k = start[nc]; k < k1; k++) {                                        \
                    if (k == self || k == other) continue;                                    \
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

#define PAIR_RETYPE                                                                           \
    double dx = xk - x, dy = yk - y;                                                          \
    if (m == 2) { dx = tiny_box_image(dx, box, half_box); dy = tiny_box_image(dy, box, half_box); } \
    const double r2 = dx * dx + dy * dy;                                                      \
    const double inv_r2 = 1.0 / r2;                                                           \
    const int ab_new = 3 * t_new + tk;                                                        \
    ov |= r2 < p[27 + ab_new];                                                                \
    e += pair_or_zero(r2, inv_r2, ab_new, p) - pair_or_zero(r2, inv_r2, 3 * t_old + tk, p);

#define GEOMETRY_ARGS                                                                         \
    int cx, int cy, int m, double box, size_t base, __global const int *start,               \
    __global const double *sx, __global const double *sy, __global const int *st,            \
    __constant const double *p

// energy change of moving slot `self` (type ti) from (x0, y0) to (x1, y1), both in the active cell;
// *overlap set if the new position is closer than the overlap distance to a particle
inline double cells_displacement_delta(double x0, double y0, double x1, double y1, int ti, int self,
                                       GEOMETRY_ARGS, int *overlap) {
    const double half_box = 0.5 * box;
    const int other = -1;
    double e = 0.0;
    int ov = 0;
    FOR_CELLS(PAIR_DISPLACEMENT)
    *overlap |= ov;
    return e;
}

// energy change of slot `self` at (x, y) changing its type from t_old to t_new, without the slot `other`
inline double cells_retype_delta(double x, double y, int t_old, int t_new, int self, int other, GEOMETRY_ARGS,
                                 int *overlap) {
    const double half_box = 0.5 * box;
    double e = 0.0;
    int ov = 0;
    FOR_CELLS(PAIR_RETYPE)
    *overlap |= ov;
    return e;
}

// ----- fast path over the gathered candidates (gx, gy, gt: coordinates and type as a double; n_pad a multiple
// of VW). Pair tables of a type t against the candidates' types, as double8 selects (3 types).
#define BY_TYPE(T, off, t)                                                                    \
    select(select((double8)(p[(off) + 3 * (t) + 2]), (double8)(p[(off) + 3 * (t) + 1]), (T) == 1.0), \
           (double8)(p[(off) + 3 * (t)]), (T) == 0.0)

// V at y = (r / s)^2 given x = (s / r)^2 = 1 / y, e4 = 4 eps
inline double8 pair8(double8 y, double8 x, double8 e4, __constant const double *p) {
    const double8 x3 = x * x * x;
    return e4 * (x3 * x3 - x3 + p[36] + p[37] * y + p[38] * y * y);
}

inline double lane_sum(double8 v) {
    const double4 a = v.lo + v.hi;
    const double2 b = a.lo + a.hi;
    return b.x + b.y;
}

#define LANES ((long8)(0, 1, 2, 3, 4, 5, 6, 7))

// The cutoff and the overlap distance are multiples of sigma_ab (system.yaml), so both tests compare y = (r / s)^2
// with one number (p[48], p[49]) and only 4 eps and 1 / s^2 depend on the candidate's type. One division for the
// old and the new position (a division costs ~4x a multiplication, and this loop is bound by them): 1 / yn = yo /
// (yn yo), within 2 ulp. The mover's own lane (yo = 0) gives inf or nan, dropped by the select like every
// excluded lane.
inline double gathered_displacement_delta(double x0, double y0, double x1, double y1, int ti, int self,
                                          const double *gx, const double *gy, const double *gt, int n_pad,
                                          __constant const double *p, int *overlap) {
    double8 e = 0.0;
    long8 ov = 0;
    const double y_cut = p[48], y_ov = p[49];
    for (int v = 0; v < n_pad; v += VW) {
        const double8 X = vload8(0, gx + v), Y = vload8(0, gy + v), T = vload8(0, gt + v);
        const long8 keep = (LANES + (long)v) != (long)self;
        const double8 e4 = BY_TYPE(T, 50, ti), is2 = BY_TYPE(T, 39, ti);
        const double8 dx1 = X - x1, dy1 = Y - y1, dx0 = X - x0, dy0 = Y - y0;
        const double8 yn = (dx1 * dx1 + dy1 * dy1) * is2, yo = (dx0 * dx0 + dy0 * dy0) * is2;
        ov |= keep & (yn < y_ov);
        const double8 inv = 1.0 / (yn * yo);
        e += select((double8)0.0, pair8(yn, yo * inv, e4, p), keep & (yn < y_cut))
           - select((double8)0.0, pair8(yo, yn * inv, e4, p), keep & (yo < y_cut));
    }
    *overlap |= any(ov);
    return lane_sum(e);
}

// energy change of exchanging the types of i (type ta, at (xi, yi), lane li) and j (type tb, lane lj); the pair
// (i, j) itself is left out (V_ab(r_ij) = V_ba(r_ij)); one division for both distances
inline double gathered_swap_delta(double xi, double yi, double xj, double yj, int ta, int tb, int li, int lj,
                                  const double *gx, const double *gy, const double *gt, int n_pad,
                                  __constant const double *p, int *overlap) {
    double8 e = 0.0;
    long8 ov = 0;
    const double y_cut = p[48], y_ov = p[49];
    for (int v = 0; v < n_pad; v += VW) {
        const double8 X = vload8(0, gx + v), Y = vload8(0, gy + v), T = vload8(0, gt + v);
        const long8 lane = LANES + (long)v;
        const long8 keep = (lane != (long)li) & (lane != (long)lj);
        const double8 dxi = X - xi, dyi = Y - yi, dxj = X - xj, dyj = Y - yj;
        const double8 r2i = dxi * dxi + dyi * dyi, r2j = dxj * dxj + dyj * dyj;
        const double8 inv = 1.0 / (r2i * r2j);
        const double8 inv_i = r2j * inv, inv_j = r2i * inv;  // 1 / r2 (see gathered_displacement_delta)
        const double8 e4a = BY_TYPE(T, 50, ta), s2a = BY_TYPE(T, 9, ta), is2a = BY_TYPE(T, 39, ta);
        const double8 e4b = BY_TYPE(T, 50, tb), s2b = BY_TYPE(T, 9, tb), is2b = BY_TYPE(T, 39, tb);
        const double8 yia = r2i * is2a, yib = r2i * is2b, yja = r2j * is2a, yjb = r2j * is2b;
        ov |= keep & ((yib < y_ov) | (yja < y_ov));
        // i: type ta -> tb, j: tb -> ta
        e += select((double8)0.0, pair8(yib, s2b * inv_i, e4b, p), keep & (yib < y_cut))
           - select((double8)0.0, pair8(yia, s2a * inv_i, e4a, p), keep & (yia < y_cut))
           + select((double8)0.0, pair8(yja, s2a * inv_j, e4a, p), keep & (yja < y_cut))
           - select((double8)0.0, pair8(yjb, s2b * inv_j, e4b, p), keep & (yjb < y_cut));
    }
    *overlap |= any(ov);
    return lane_sum(e);
}

// Metropolis test u < exp(-x) for x = beta dE > 0, with exp only where needed: exp(-x) < 1 / (1 + x + x^2 / 2 +
// x^3 / 6) (a truncated series of e^x), so u at or above that bound (slightly raised against rounding) is
// rejected as exp would reject it; the decision is that of u < exp(-x) for every u
inline int metropolis(double x, double u) {
    const double bound = 1.0 / (1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0))));
    return u < bound * (1.0 + 0x1p-40) && u < exp(-x);
}

__kernel void sweep_phase(const int n, const int m, const double box, const double cs, const double reach,
                          const uint seed_lo, const uint seed_hi, const uint sweep, const int phase,
                          const double beta, __global const double *steps, const double swap_fraction,
                          const int n_pairs, __constant const int *pairs, __constant const double *p,
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
    const double inv_cs = 1.0 / cs;
    const size_t base = (size_t)b * n;
    __global const int *start = cell_start + (size_t)b * (n_cells + 1);
    const int s0 = start[c];
    const int n_c = start[c + 1] - s0;
    const uint2 key = (uint2)(seed_lo, seed_hi);
    const uint word = ((uint)phase << 28) | (uint)c;
    const double d = steps[b];  // each chain its own displacement step (adapted from its own acceptance)

    // gather the candidates (fast path); n_g counts them all, those beyond K_MAX are not stored
    // room for the padding up to a multiple of VW and for slot K_MAX (see below), whatever K_MAX
    double gx[K_MAX + VW], gy[K_MAX + VW], gt[K_MAX + VW];
    int n_g = 0;
    if (m > 2) {
        for (int s = s0; s < s0 + n_c; s++, n_g++) {
            if (n_g < K_MAX) {
                gx[n_g] = sx[base + s];
                gy[n_g] = sy[base + s];
                gt[n_g] = (double)st[base + s];
            }
        }
        const double x_lo = cx * cs, x_hi = x_lo + cs, y_lo = cy * cs, y_hi = y_lo + cs, reach2 = reach * reach;
        for (int ddx = -1; ddx <= 1; ddx++) {
            int nx = cx + ddx;
            double shift_x = 0.0;
            if (nx < 0) { nx += m; shift_x = -box; }
            else if (nx >= m) { nx -= m; shift_x = box; }
            for (int ddy = -1; ddy <= 1; ddy++) {
                if (ddx == 0 && ddy == 0) continue;
                int ny = cy + ddy;
                double shift_y = 0.0;
                if (ny < 0) { ny += m; shift_y = -box; }
                else if (ny >= m) { ny -= m; shift_y = box; }
                const int nc = nx * m + ny;
                const int k1 = start[nc + 1];
                for (int k = start[nc]; k < k1; k++) {
                    const double xk = sx[base + k] + shift_x, yk = sy[base + k] + shift_y;
                    // distance from the cell's square (0 inside)
                    const double ex = fmax(fmax(x_lo - xk, xk - x_hi), 0.0);
                    const double ey = fmax(fmax(y_lo - yk, yk - y_hi), 0.0);
                    // branch-free compaction (the test is true for ~3/4 in no predictable order): every
                    // particle is written, and kept by advancing n_g; slot K_MAX takes those beyond the capacity
                    const int w = min(n_g, K_MAX);
                    gx[w] = xk;
                    gy[w] = yk;
                    gt[w] = (double)st[base + k];
                    n_g += ex * ex + ey * ey < reach2;
                }
            }
        }
    }
    const int fast = m > 2 && n_g <= K_MAX;
    const int n_pad = fast ? (n_g + VW - 1) / VW * VW : 0;
    for (int k = n_g; k < n_pad; k++) {
        gx[k] = FAR;
        gy[k] = FAR;
        gt[k] = 0.0;
    }

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
            double de;
            // the pair (i, j) itself is left out: V_ab(r_ij) = V_ba(r_ij)
            if (fast) {
                de = gathered_swap_delta(xi, yi, xj, yj, ta, tb, si - s0, sj - s0, gx, gy, gt, n_pad, p, &ov);
            } else {
                de = cells_retype_delta(xi, yi, ta, tb, si, sj, cx, cy, m, box, base, start, sx, sy, st, p, &ov)
                   + cells_retype_delta(xj, yj, tb, ta, sj, si, cx, cy, m, box, base, start, sx, sy, st, p, &ov);
            }
            if (ov) continue;
            if (de <= 0.0 || metropolis(beta * de, u01(philox4x32_10(
                                 (uint4)((uint)b, sweep, word, 2u * (uint)t + 1u), key).x))) {
                st[base + si] = tb;
                st[base + sj] = ta;
                if (fast) {
                    gt[si - s0] = (double)tb;
                    gt[sj - s0] = (double)ta;
                }
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
            if (x < 0.0 || x >= box || y < 0.0 || y >= box || cell_coord(x, inv_cs, m) != cx ||
                cell_coord(y, inv_cs, m) != cy)
                continue;
            const int ti = st[base + s];
            int ov = 0;
            const double de = fast
                ? gathered_displacement_delta(x_old, y_old, x, y, ti, s - s0, gx, gy, gt, n_pad, p, &ov)
                : cells_displacement_delta(x_old, y_old, x, y, ti, s, cx, cy, m, box, base, start, sx, sy, st, p, &ov);
            if (ov) continue;
            if (de <= 0.0 || metropolis(beta * de, u01(philox4x32_10(
                                 (uint4)((uint)b, sweep, word, 2u * (uint)t + 1u), key).x))) {
                sx[base + s] = x;
                sy[base + s] = y;
                sdx[base + s] += dx;
                sdy[base + s] += dy;
                if (fast) {
                    gx[s - s0] = x;
                    gy[s - s0] = y;
                }
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
