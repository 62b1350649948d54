/* Callgrind client requests for bench.bench_instructions: zero the counters, dump them. */
#include <valgrind/callgrind.h>

void realname_callgrind_zero(void) { CALLGRIND_ZERO_STATS; }

void realname_callgrind_dump(void) { CALLGRIND_DUMP_STATS; }
