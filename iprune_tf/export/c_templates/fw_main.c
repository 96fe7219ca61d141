/* Firmware harness: through semihosting, reads inputs (float32) from IPR_IN_PATH on the host one at
 * a time and writes per input its predicted class (int32) and scores (float32) to IPR_OUT_PATH.
 * IPR_STUB builds the same harness around an empty model, to measure the model's share of flash. */
#include <stdint.h>
#include <stdio.h>
#include IPR_HEADER

#define IPR_CAT2(a, b) a##_##b
#define IPR_CAT(a, b) IPR_CAT2(a, b)
#define IPR_FORWARD IPR_CAT(IPR_NAME, forward)
#define IPR_PREDICT IPR_CAT(IPR_NAME, predict)

#ifdef IPR_STUB
void IPR_FORWARD(const float *input, float *scores)
{
    for (int i = 0; i < IPR_CLASSES; ++i)
        scores[i] = input[i];
}

int IPR_PREDICT(const float *input)
{
    (void)input;
    return 0;
}
#endif

static float x[IPR_INPUT_SIZE];
static float scores[IPR_CLASSES];

int main(void)
{
    FILE *in = fopen(IPR_IN_PATH, "rb"), *out = fopen(IPR_OUT_PATH, "wb");
    long n = 0;
    if (!in || !out) {
        printf("cannot open the semihosting files\n");
        return 2;
    }
    while (fread(x, sizeof x, 1, in) == 1) {
        const int32_t cls = IPR_PREDICT(x);
        IPR_FORWARD(x, scores);
        fwrite(&cls, sizeof cls, 1, out);
        fwrite(scores, sizeof scores, 1, out);
        ++n;
    }
    fclose(out);
    printf("ipr_done %ld\n", n);
    return 0;
}
