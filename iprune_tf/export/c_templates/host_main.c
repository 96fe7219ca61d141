/* Host harness: reads N inputs (float32) from argv[1], writes per input its predicted class (int32)
 * and its scores (float32) to argv[2]. With argv[3] = R, also times R passes of predict over all
 * inputs and prints the CPU nanoseconds per inference (best pass). Built with -DIPR_NAME=... -DIPR_HEADER=... */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include IPR_HEADER

#define IPR_CAT2(a, b) a##_##b
#define IPR_CAT(a, b) IPR_CAT2(a, b)
#define IPR_FORWARD IPR_CAT(IPR_NAME, forward)
#define IPR_PREDICT IPR_CAT(IPR_NAME, predict)

static float scores[IPR_CLASSES];

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t); /* CPU time: robust to a loaded machine */
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s INPUTS OUTPUTS [REPEATS]\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) {
        fprintf(stderr, "cannot open %s or %s\n", argv[1], argv[2]);
        return 2;
    }
    fseek(in, 0, SEEK_END);
    const long n = ftell(in) / (long)(sizeof(float) * IPR_INPUT_SIZE);
    fseek(in, 0, SEEK_SET);
    float *x = malloc(sizeof(float) * IPR_INPUT_SIZE * (size_t)(n ? n : 1));
    if (!x || fread(x, sizeof(float) * IPR_INPUT_SIZE, (size_t)n, in) != (size_t)n) {
        fprintf(stderr, "cannot read %ld inputs\n", n);
        return 2;
    }
    for (long i = 0; i < n; ++i) {
        const int32_t cls = IPR_PREDICT(x + i * IPR_INPUT_SIZE);
        IPR_FORWARD(x + i * IPR_INPUT_SIZE, scores);
        fwrite(&cls, sizeof cls, 1, out);
        fwrite(scores, sizeof(float), IPR_CLASSES, out);
    }
    fclose(out);
    if (argc > 3 && n > 0) {
        const long repeats = atol(argv[3]);
        volatile int32_t sink = 0;
        double best = 1e300;
        for (long r = 0; r < repeats; ++r) {
            const double t0 = now_ns();
            for (long i = 0; i < n; ++i)
                sink += IPR_PREDICT(x + i * IPR_INPUT_SIZE);
            const double t = (now_ns() - t0) / (double)n;
            best = t < best ? t : best;
        }
        printf("ns_per_inference %.1f\n", best);
    }
    free(x);
    return 0;
}
