/* Cortex-M start-up: vector table, then copy .data from flash to RAM (newlib's _start does not,
 * and without it the firmware silently hangs) and enable the FPU if there is one. */
#include <stdint.h>
#include <string.h>

extern uint32_t __etext, __data_start__, __data_end__, __StackTop;
extern void _start(void);

void reset_handler(void)
{
    memcpy(&__data_start__, &__etext, (size_t)((char *)&__data_end__ - (char *)&__data_start__));
#if defined(__ARM_FP)
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20; /* CPACR: CP10, CP11 full access */
    __asm__ volatile("dsb\n\tisb");
#endif
    _start();
    for (;;) {
    }
}

static void hang(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))&__StackTop, reset_handler, hang, hang, hang, hang, hang, 0, 0, 0, 0, hang, hang, 0, hang, hang,
};
