/* Helpers shared by every generated model (static inline: unused ones cost nothing). */
#include <stdint.h>
#include <string.h>

/* For the fixed-point layers on x86: GCC's loop vectorizer turns their gathers over neurons into
 * lane-by-lane inserts, 1.5x the time of the scalar loop (elsewhere nothing: on a Cortex-M the
 * attribute costs instructions). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__SSE2__)
#define IPR_SCALAR __attribute__((optimize("no-tree-vectorize")))
#else
#define IPR_SCALAR
#endif

/* Bit pos of a packed bit vector (+1 = 1, -1 = 0; bit i of word i / 32 at position i % 32). */
#define IPR_BIT(b, pos) ((b)[(pos) >> 5] >> ((pos) & 31u) & 1u)

/* Number of set bits (SWAR: no builtin, so any C99 compiler and no libgcc call). */
static inline uint32_t ipr_popcount(uint32_t v)
{
    v = v - ((v >> 1) & 0x55555555u);
    v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
    v = (v + (v >> 4)) & 0x0F0F0F0Fu;
    return (v * 0x01010101u) >> 24;
}

/* v if bit is 1, -v if it is 0: flips the IEEE sign bit (exact, no branch, no float operation). */
static inline float ipr_signed(float v, uint32_t bit)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u ^= (bit ^ 1u) << 31;
    memcpy(&v, &u, sizeof v);
    return v;
}

/* An unsigned integer ordered like the float v (not NaN): compares of the input with thresholds
 * (float_keys in c_steps.py) need no float operation. */
static inline uint32_t ipr_fkey(float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return u ^ ((0u - (u >> 31)) | 0x80000000u);
}

/* Set bit pos of b to on (0 or 1). */
static inline void ipr_put(uint32_t *b, uint32_t pos, uint32_t on)
{
    const uint32_t mask = 1u << (pos & 31u);
    b[pos >> 5] = (b[pos >> 5] & ~mask) | (on ? mask : 0u);
}

/* Float element i of a word buffer (memcpy: no type punning, compiles to one load/store). */
static inline float ipr_ldf(const uint32_t *b, uint32_t i)
{
    float f;
    memcpy(&f, b + i, sizeof f);
    return f;
}

static inline void ipr_stf(uint32_t *b, uint32_t i, float f)
{
    memcpy(b + i, &f, sizeof f);
}

static inline void ipr_fill_f(uint32_t *b, uint32_t n, float f)
{
    for (uint32_t i = 0; i < n; ++i)
        ipr_stf(b, i, f);
}

static inline void ipr_fill_w(uint32_t *b, uint32_t n, uint32_t w)
{
    for (uint32_t i = 0; i < n; ++i)
        b[i] = w;
}

/* Float activations stored in 16 bits (to_c's activation_storage="f16"): IEEE half, rounded to nearest
 * even; magnitudes from 65520 on become 0x7C00, which ipr_ldh reads back as 65536. */
static inline void ipr_sth(uint32_t *b, uint32_t i, float f)
{
    uint32_t u, h;
    memcpy(&u, &f, sizeof u);
    const uint32_t a = u & 0x7FFFFFFFu;
    if (a >= 0x477FF000u) {
        h = 0x7C00u;
    } else if (a < 0x38800000u) { /* below 2^-14: subnormal half, |f| * 2^24 rounded (exact product) */
        float m;
        memcpy(&m, &a, sizeof m);
        h = (uint32_t)(m * 16777216.0f + 0.5f);
    } else { /* rebias the exponent; round the 13 dropped bits to nearest even (a carry is correct) */
        const uint32_t rest = a & 0x1FFFu;
        h = (a >> 13) - (112u << 10);
        h += (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ? 1u : 0u;
    }
    const uint16_t v = (uint16_t)(h | (u >> 16 & 0x8000u));
    memcpy((uint8_t *)b + 2u * i, &v, sizeof v);
}

static inline float ipr_ldh(const uint32_t *b, uint32_t i)
{
    uint16_t v;
    memcpy(&v, (const uint8_t *)b + 2u * i, sizeof v);
    const uint32_t e = v >> 10 & 0x1Fu, m = v & 0x3FFu;
    float f;
    if (e == 0u) { /* subnormal or zero: m * 2^-24, exact */
        f = (float)m * 5.9604644775390625e-8f;
        return (v & 0x8000u) ? -f : f;
    }
    const uint32_t u = (uint32_t)(v & 0x8000u) << 16 | (e + 112u) << 23 | m << 13;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Float activations stored in 8 bits (activation_storage="q8"): value = q * scale, q rounded half away
 * from zero and clamped; uint8 for tensors never negative in calibration, int8 (-127..127) otherwise. */
static inline void ipr_stu8(uint32_t *b, uint32_t i, float f, float inv_scale)
{
    const float q = f * inv_scale + 0.5f;
    ((uint8_t *)b)[i] = (uint8_t)(q <= 0.0f ? 0.0f : q >= 255.0f ? 255.0f : q);
}

static inline float ipr_ldu8(const uint32_t *b, uint32_t i, float scale)
{
    return (float)((const uint8_t *)b)[i] * scale;
}

static inline void ipr_sts8(uint32_t *b, uint32_t i, float f, float inv_scale)
{
    float q = f * inv_scale;
    q = q >= 0.0f ? q + 0.5f : q - 0.5f;
    ((int8_t *)b)[i] = (int8_t)(q <= -127.0f ? -127.0f : q >= 127.0f ? 127.0f : q);
}

static inline float ipr_lds8(const uint32_t *b, uint32_t i, float scale)
{
    return (float)((const int8_t *)b)[i] * scale;
}

/* Field of `mask` bits starting at bit bitpos of a little-endian bit stream (fields <= 17 bits;
 * the stream has 3 bytes of slack at its end). */
static inline uint32_t ipr_unpack(const uint8_t *p, uint32_t bitpos, uint32_t mask)
{
    const uint8_t *q = p + (bitpos >> 3);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint32_t w;
    memcpy(&w, q, sizeof w); /* one unaligned load where the target allows it */
#else
    const uint32_t w = (uint32_t)q[0] | (uint32_t)q[1] << 8 | (uint32_t)q[2] << 16;
#endif
    return (w >> (bitpos & 7u)) & mask;
}

/* round(v * mult / 2^shift) clamped to [-qmax, qmax] (2^13 < mult <= 2^14), from the IEEE bits of v:
 * with the top 16 bits m of its significand, v = m * 2^(e - 142). One 32-bit multiply, no float
 * operation (the fixed-point build's input step); zeros (common in images, in runs) return early. */
static inline int32_t ipr_quantize(float v, uint32_t mult, int32_t shift, uint32_t qmax)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    const int32_t e = (int32_t)(u >> 23 & 0xFFu);
    if (e == 0)
        return 0;
    const uint32_t m = ((u & 0x7FFFFFu) | 0x800000u) >> 8;
    int32_t sh = shift + 142 - e;
    sh = sh < 1 ? 1 : sh > 31 ? 31 : sh; /* below 1: saturates anyway; above 31: rounds to 0 */
    uint32_t q = (m * mult + (1u << (sh - 1))) >> sh;
    q = q < qmax ? q : qmax;
    return (u >> 31) ? -(int32_t)q : (int32_t)q;
}
