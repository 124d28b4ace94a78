/* sha256.c - SHA-256 (FIPS 180-4) for content hashes.
 *
 * A small self-contained implementation so that patch/ depends on jansson
 * only. Checked against the FIPS 180-2 test vectors in tests/test_patch.c.
 * On x86-64 processors with the SHA extensions (found with cpuid at the
 * first call) a block is compressed with them, about four times faster
 * than the portable rounds, which every other processor runs.
 */
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_SHA_NI 1
#endif

#include "syncd/patch.h"

typedef struct sha256_ctx {
    uint32_t state[8];
    uint64_t total;
    unsigned char block[64];
    size_t used;
} sha256_ctx_t;

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

#ifdef HAVE_SHA_NI
/* Returns 1 when the processor has the SHA extensions and SSE4.1. */
static int sha_ni_supported(void)
{
    static int known; /* 0: not asked yet, 1: no, 2: yes */
    int v = __atomic_load_n(&known, __ATOMIC_RELAXED);
    unsigned a, b, c, d;

    if (v == 0) {
        v = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_SSE4_1) &&
                    __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_SHA)
                ? 2
                : 1;
        __atomic_store_n(&known, v, __ATOMIC_RELAXED);
    }
    return v == 2;
}

/* Compresses the block p into state with the SHA extensions: four rounds
 * per step on the message words w, scheduling the words four steps ahead
 * (sha256msg1/msg2), with the state held as ABEF and CDGH. */
__attribute__((target("sha,sse4.1"))) static void
compress_ni(uint32_t state[8], const unsigned char *p)
{
    const __m128i swap =
        _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((void *)&state[0]), 0xb1);
    __m128i s1 = _mm_shuffle_epi32(_mm_loadu_si128((void *)&state[4]), 0x1b);
    __m128i s0 = _mm_alignr_epi8(tmp, s1, 8); /* ABEF */
    __m128i abef = s0, cdgh;
    __m128i w[4];

    s1 = _mm_blend_epi16(s1, tmp, 0xf0); /* CDGH */
    cdgh = s1;
    for (int i = 0; i < 4; i++)
        w[i] = _mm_shuffle_epi8(_mm_loadu_si128((void *)(p + 16 * i)), swap);
    for (int i = 0; i < 16; i++) {
        __m128i msg =
            _mm_add_epi32(w[i & 3], _mm_loadu_si128((void *)&k[4 * i]));

        s1 = _mm_sha256rnds2_epu32(s1, s0, msg);
        if (i < 12)
            w[i & 3] = _mm_sha256msg2_epu32(
                _mm_add_epi32(
                    _mm_sha256msg1_epu32(w[i & 3], w[(i + 1) & 3]),
                    _mm_alignr_epi8(w[(i + 3) & 3], w[(i + 2) & 3], 4)),
                w[(i + 3) & 3]);
        s0 = _mm_sha256rnds2_epu32(s0, s1, _mm_shuffle_epi32(msg, 0x0e));
    }
    s0 = _mm_add_epi32(s0, abef);
    s1 = _mm_add_epi32(s1, cdgh);
    tmp = _mm_shuffle_epi32(s0, 0x1b);   /* FEBA */
    s1 = _mm_shuffle_epi32(s1, 0xb1);    /* DCHG */
    s0 = _mm_blend_epi16(tmp, s1, 0xf0); /* DCBA */
    s1 = _mm_alignr_epi8(s1, tmp, 8);    /* HGFE */
    _mm_storeu_si128((void *)&state[0], s0);
    _mm_storeu_si128((void *)&state[4], s1);
}
#endif

static void compress(sha256_ctx_t *ctx, const unsigned char *p)
{
    uint32_t w[64];

#ifdef HAVE_SHA_NI
    if (sha_ni_supported()) {
        compress_ni(ctx->state, p);
        return;
    }
#endif

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

static void update(sha256_ctx_t *ctx, const unsigned char *p, size_t len)
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

void syncd_sha256(unsigned char out[32], const void *data, size_t len)
{
    sha256_ctx_t ctx = {{0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19}};
    unsigned char pad[72] = {0x80};
    uint64_t bits;
    size_t padlen;

    update(&ctx, data, len);
    bits = ctx.total * 8;
    padlen = (ctx.used < 56 ? 56 : 120) - ctx.used;
    for (int i = 0; i < 8; i++)
        pad[padlen + i] = (unsigned char)(bits >> (56 - 8 * i));
    update(&ctx, pad, padlen + 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(ctx.state[i] >> 24);
        out[4 * i + 1] = (unsigned char)(ctx.state[i] >> 16);
        out[4 * i + 2] = (unsigned char)(ctx.state[i] >> 8);
        out[4 * i + 3] = (unsigned char)ctx.state[i];
    }
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
