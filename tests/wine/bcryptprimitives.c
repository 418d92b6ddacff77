/*
 * A one-function bcryptprimitives.dll for running the entrypoint's Windows build under Wine 8.0
 * in the tests. Rust's std (1.78 and later) imports ProcessPrng from bcryptprimitives.dll, which
 * every Windows 10 / Server 2016 and later has but Wine 8.0 does not, so the .exe would not load.
 * This DLL exists only in the tests' Wine prefix; it never ships.
 */
#include <windows.h>

/* RtlGenRandom, exported by advapi32 under this name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
