/* sha256.c - SHA-256 (FIPS 180-4) for content hashes.
 *
 * A small self-contained implementation so that patch/ depends on jansson
 * only; on x86-64 it uses the CPU's SHA extensions when it has them (the
 * Merkle hash of doc/HASH.md hashes many small inputs). Checked against the
 * FIPS 180-2 test vectors in tests/test_patch.c.
 */
#include <stdint.h>
#include <string.h>

#include "patch/internal.h"

static const uint32_t k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
    0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
    0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
    0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
    0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n)
{
    return (x >> n) | (x << (32 - n));
}

static void compress_c(syncd_sha256_ctx_t *ctx, const unsigned char *p)
{
    uint32_t w[64];

    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);

        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    /* The working variables live in locals, not an array rotated by
     * memmove, so that the compiler keeps them in registers. */
    uint32_t a = ctx->state[0], b = ctx->state[1], c = ctx->state[2];
    uint32_t d = ctx->state[3], e = ctx->state[4], f = ctx->state[5];
    uint32_t g = ctx->state[6], h = ctx->state[7];
    for (int i = 0; i < 64; i++) {
        uint32_t e1 = ror(e, 6) ^ ror(e, 11) ^ ror(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + e1 + ch + k[i] + w[i];
        uint32_t e0 = ror(a, 2) ^ ror(a, 13) ^ ror(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);

        h = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + e0 + maj;
    }
    ctx->state[0] += a;
    ctx->state[1] += b;
    ctx->state[2] += c;
    ctx->state[3] += d;
    ctx->state[4] += e;
    ctx->state[5] += f;
    ctx->state[6] += g;
    ctx->state[7] += h;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>

/* One block with the x86 SHA extensions: the state kept as ABEF and CDGH,
 * four rounds per group, the message schedule by sha256msg1/msg2. */
__attribute__((target("sha,sse4.1"))) static void
compress_ni(syncd_sha256_ctx_t *ctx, const unsigned char *p)
{
    const __m128i swap =
        _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i st0, st1, tmp, msg[4], abef, cdgh;

    tmp = _mm_loadu_si128((const __m128i *)&ctx->state[0]);
    st1 = _mm_loadu_si128((const __m128i *)&ctx->state[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);
    st1 = _mm_shuffle_epi32(st1, 0x1B);
    st0 = _mm_alignr_epi8(tmp, st1, 8);
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);
    abef = st0;
    cdgh = st1;
    for (int i = 0; i < 16; i++) {
        __m128i *m = &msg[i & 3];

        if (i < 4) {
            *m = _mm_shuffle_epi8(
                _mm_loadu_si128((const __m128i *)(p + 16 * i)), swap);
        } else {
            __m128i prev = msg[(i - 1) & 3], prev2 = msg[(i - 2) & 3];

            *m = _mm_sha256msg1_epu32(*m, msg[(i - 3) & 3]);
            *m = _mm_add_epi32(*m, _mm_alignr_epi8(prev, prev2, 4));
            *m = _mm_sha256msg2_epu32(*m, prev);
        }
        tmp = _mm_add_epi32(*m, _mm_loadu_si128((const __m128i *)&k[4 * i]));
        st1 = _mm_sha256rnds2_epu32(st1, st0, tmp);
        tmp = _mm_shuffle_epi32(tmp, 0x0E);
        st0 = _mm_sha256rnds2_epu32(st0, st1, tmp);
    }
    st0 = _mm_add_epi32(st0, abef);
    st1 = _mm_add_epi32(st1, cdgh);
    tmp = _mm_shuffle_epi32(st0, 0x1B);
    st1 = _mm_shuffle_epi32(st1, 0xB1);
    st0 = _mm_blend_epi16(tmp, st1, 0xF0);
    st1 = _mm_alignr_epi8(st1, tmp, 8);
    _mm_storeu_si128((__m128i *)&ctx->state[0], st0);
    _mm_storeu_si128((__m128i *)&ctx->state[4], st1);
}

/* Returns 1 when the CPU has the SHA extensions and SSE4.1. */
static int cpu_has_sha(void)
{
    unsigned a, b, c, d;

    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_SSE4_1))
        return 0;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA) != 0;
}

/* Compresses one block with the SHA extensions when the CPU has them
 * (asked once; a race only asks twice). */
static void compress(syncd_sha256_ctx_t *ctx, const unsigned char *p)
{
    static _Atomic int have = -1;
    int h = have;

    if (h < 0)
        have = h = cpu_has_sha();
    if (h)
        compress_ni(ctx, p);
    else
        compress_c(ctx, p);
}
#else
#define compress compress_c
#endif

static void update(syncd_sha256_ctx_t *ctx, const unsigned char *p, size_t len)
{
    ctx->total += len;
    while (len > 0) {
        size_t n = 64 - ctx->used < len ? 64 - ctx->used : len;

        memcpy(ctx->block + ctx->used, p, n);
        ctx->used += n;
        p += n;
        len -= n;
        if (ctx->used == 64) {
            compress(ctx, ctx->block);
            ctx->used = 0;
        }
    }
}

void syncd_sha256_init(syncd_sha256_ctx_t *ctx)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372,
                                   0xa54ff53a, 0x510e527f, 0x9b05688c,
                                   0x1f83d9ab, 0x5be0cd19};

    memcpy(ctx->state, iv, sizeof(iv));
    ctx->total = 0;
    ctx->used = 0;
}

void syncd_sha256_update(syncd_sha256_ctx_t *ctx, const void *data, size_t len)
{
    update(ctx, data, len);
}

void syncd_sha256_final(syncd_sha256_ctx_t *ctx, unsigned char out[32])
{
    unsigned char pad[72] = {0x80};
    uint64_t bits = ctx->total * 8;
    size_t padlen = (ctx->used < 56 ? 56 : 120) - ctx->used;

    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    update(ctx, pad, padlen + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(ctx->state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(ctx->state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(ctx->state[i] >> 8);
        out[4 * i + 3] = (unsigned char)ctx->state[i];
    }
}

void syncd_sha256(unsigned char out[32], const void *data, size_t len)
{
    syncd_sha256_ctx_t ctx;

    syncd_sha256_init(&ctx);
    update(&ctx, data, len);
    syncd_sha256_final(&ctx, out);
}

void syncd_sha256_hex(char out[SYNCD_HASH_HEX_LEN + 1], const void *data,
                      size_t len)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[32];

    syncd_sha256(raw, data, len);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = digits[raw[i] >> 4];
        out[2 * i + 1] = digits[raw[i] & 15];
    }
    out[SYNCD_HASH_HEX_LEN] = '\0';
}
