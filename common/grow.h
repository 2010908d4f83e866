/* Growing an array by doubling: the one allocation pattern of the index
 * and tree builders, which keep entries in arrays, not per-entry mallocs. */
#pragma once
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

/* Makes room for `need` elements of `elem` bytes in *arr (capacity *cap),
 * starting at `first` and doubling; -EFBIG when need reaches `limit`. */
static inline int mlfs_grow(void **arr, size_t *cap, size_t need, size_t elem, size_t first, size_t limit)
{
	if (need <= *cap)
		return 0;
	if (need >= limit)
		return -EFBIG;
	size_t n = *cap ? *cap : first;
	while (n < need)
		n *= 2;
	if (n > SIZE_MAX / elem)
		return -ENOMEM;
	void *p = realloc(*arr, n * elem);
	if (!p)
		return -ENOMEM;
	*arr = p;
	*cap = n;
	return 0;
}
