/* libstep: the shared library stepper maps. STEP_BUILD changes its
 * contents without changing what it computes, as a library updated under
 * a running job would. */
#ifndef STEP_BUILD
#define STEP_BUILD "build 1"
#endif

const char *step_build(void)
{
	return STEP_BUILD;
}

long step_next(long i)
{
	return i + 1;
}
