/* Firmware harness: through semihosting, reads inputs (float32) from IPR_IN_PATH on the host one at
 * a time and writes per input its predicted class (int32) and scores (float32) to IPR_OUT_PATH.
 * IPR_STUB builds the same harness around an empty model, to measure the model's share of flash.
 * IPR_TIMING writes instead per input its class (int32) and the SysTick ticks of one predict call
 * (uint32); under QEMU's -icount shift=0 a tick is a fixed number of executed instructions.
 * IPR_CALIBRATE (with IPR_STUB) times a loop of a known instruction count instead, per input: the
 * input's first value is the loop's iteration count (2 instructions per iteration). */
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
#if !defined(IPR_TIMING) && !defined(IPR_CALIBRATE)
static float scores[IPR_CLASSES];
#endif

#if defined(IPR_TIMING) || defined(IPR_CALIBRATE)
#define IPR_SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define IPR_SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define IPR_SYST_CVR (*(volatile uint32_t *)0xE000E018u)

/* SysTick on the processor clock, counting down from 2^24 - 1, no interrupt. */
static void systick_start(void)
{
    IPR_SYST_RVR = 0xFFFFFFu;
    IPR_SYST_CVR = 0u;
    IPR_SYST_CSR = 5u;
}

/* Ticks from t0 to t1 (counting down, modulo 2^24). */
static uint32_t ticks_between(uint32_t t0, uint32_t t1)
{
    return (t0 - t1) & 0xFFFFFFu;
}
#endif

#ifdef IPR_CALIBRATE
/* n iterations of SUBS + BNE: exactly 2n instructions. */
static uint32_t timed_loop(uint32_t n)
{
    const uint32_t t0 = IPR_SYST_CVR;
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(n) : : "cc");
    return ticks_between(t0, IPR_SYST_CVR);
}
#endif

static int32_t run_one(uint32_t *ticks)
{
#if defined(IPR_CALIBRATE)
    *ticks = timed_loop((uint32_t)x[0]);
    return 0;
#elif defined(IPR_TIMING)
    const uint32_t t0 = IPR_SYST_CVR;
    const int32_t cls = IPR_PREDICT(x);
    *ticks = ticks_between(t0, IPR_SYST_CVR);
    return cls;
#else
    *ticks = 0u;
    const int32_t cls = IPR_PREDICT(x);
    IPR_FORWARD(x, scores);
    return cls;
#endif
}

int main(void)
{
    FILE *in = fopen(IPR_IN_PATH, "rb"), *out = fopen(IPR_OUT_PATH, "wb");
    long n = 0;
    if (!in || !out) {
        printf("cannot open the semihosting files\n");
        return 2;
    }
#if defined(IPR_TIMING) || defined(IPR_CALIBRATE)
    systick_start();
#endif
    while (fread(x, sizeof x, 1, in) == 1) {
        uint32_t ticks;
        const int32_t cls = run_one(&ticks);
        fwrite(&cls, sizeof cls, 1, out);
#if defined(IPR_TIMING) || defined(IPR_CALIBRATE)
        fwrite(&ticks, sizeof ticks, 1, out);
#else
        fwrite(scores, sizeof scores, 1, out);
#endif
        ++n;
    }
    fclose(out);
    printf("ipr_done %ld\n", n);
    return 0;
}
